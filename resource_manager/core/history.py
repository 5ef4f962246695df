"""History: who changed which machine or address, when, what, and why.

Every change is one document in the `history` collection. Allocation code calls
record() itself; plain POST/PATCH/PUT/DELETE through Eve are recorded by hooks.
A write made through Eve may carry a reason in the `X-Reason` header.
"""

import datetime

from ..schema import META_FIELDS, NAME_FIELDS
from . import events

COLLECTION = "history"


def utcnow():
    """Return the time as Eve stores it: tz-aware UTC, whole seconds."""
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)


def diff(before, after):
    """Return {field: {"before", "after"}} for the fields that differ (meta fields aside)."""
    changes = {}
    for field in sorted(set(before) | set(after)):
        if field in META_FIELDS:
            continue
        old, new = before.get(field), after.get(field)
        if old != new:
            changes[field] = {"before": old, "after": new}
    return changes


def entry(resource, doc, action, changes, user=None, reason=None, job_id=None, at=None):
    """Return the history entry for the machine or address `doc` (not stored)."""
    return {
        "resource": resource,
        "name": doc.get(NAME_FIELDS[resource]),
        "item_id": str(doc.get("_id")),
        "at": at or utcnow(),
        "user": user,
        "action": action,
        "changes": changes,
        "reason": reason,
        "job_id": job_id if job_id is not None else doc.get("job_id"),
    }


def record(db, resource, doc, action, changes, user=None, reason=None, job_id=None, at=None):
    """Store one history entry for the machine or address `doc`."""
    if not changes and action in ("update",):
        return
    _insert(db, [entry(resource, doc, action, changes, user, reason, job_id, at)])


def record_many(db, entries):
    """Store several entries (from `entry`) in one insert: a bulk POST's."""
    if entries:
        _insert(db, entries)


def record_reservation(db, res, action, before, user=None, reason=None, at=None):
    """Store one history entry for a reservation's change of state (queued, granted, cancelled, timed_out).

    Kept with the machines' and addresses' entries, as resource "reservations", named by its _id.
    """
    _insert(db, [{
        "resource": "reservations", "name": res["_id"], "item_id": res["_id"], "at": at or utcnow(),
        "user": user, "action": action, "changes": {"state": {"before": before, "after": res.get("state")}},
        "reason": reason, "job_id": res.get("job_id")}])


def _insert(db, entries):
    """Insert history entries: every entry of every kind goes through here."""
    events.publish(db, entries)  # first: an event of a change made, even if a crash loses its entry
    if len(entries) == 1:
        db[COLLECTION].insert_one(entries[0])
    else:
        db[COLLECTION].insert_many(entries, ordered=False)
