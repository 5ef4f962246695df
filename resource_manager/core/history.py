"""History: who changed which machine, address or reservation, when, what, and why.

Every change is one document in the `history` collection, inserted by `_insert` (the one place
every entry goes through). Core records its own changes; plain POST/PATCH/PUT/DELETE through
Eve are recorded by the API's hooks (a write may carry a reason in the `X-Reason` header).
A reservation's entries (resource "reservations", named by its _id) record each change of its
state: queued, granted, extended, released, expired, cancelled, timed_out.
"""

from ..schema import META_FIELDS, NAME_FIELDS
from . import events
from .context import NOBODY
from .store import HISTORY

COLLECTION = HISTORY


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


def entry(resource, doc, action, changes, actor, at):
    """Return the history entry for the machine or address `doc` (not stored)."""
    return {
        "resource": resource,
        "name": doc.get(NAME_FIELDS[resource]),
        "item_id": str(doc.get("_id")),
        "at": at,
        "user": actor.user,
        "action": action,
        "changes": changes,
        "reason": actor.reason,
        "job_id": actor.job_id if actor.job_id is not None else doc.get("job_id"),
    }


def record(db, resource, doc, action, changes, actor=NOBODY, *, at):
    """Store one history entry for the machine or address `doc` (an update that changed nothing: none)."""
    if not changes and action == "update":
        return
    _insert(db, [entry(resource, doc, action, changes, actor, at)])


def record_many(db, entries):
    """Store several entries (from `entry`) in one insert: a bulk POST's."""
    if entries:
        _insert(db, entries)


def record_reservation(db, res, action, before, actor=NOBODY, *, at, changes=None):
    """Store one history entry for a reservation: its change of state from `before` (and other `changes`)."""
    changed = {"state": {"before": before, "after": res.get("state")}} if before != res.get("state") else {}
    changed.update(changes or {})
    _insert(db, [{
        "resource": "reservations", "name": res["_id"], "item_id": res["_id"], "at": at,
        "user": actor.user, "action": action, "changes": changed, "reason": actor.reason,
        "job_id": res.get("job_id")}])


def _insert(db, entries):
    """Insert history entries: every entry of every kind goes through here."""
    events.publish(db, entries)  # first: an event of a change made, even if a crash loses its entry
    if len(entries) == 1:
        db[COLLECTION].insert_one(entries[0])
    else:
        db[COLLECTION].insert_many(entries, ordered=False)
