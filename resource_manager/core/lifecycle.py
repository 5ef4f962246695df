"""Machine lifecycle timeouts: a machine stuck in `pxe` becomes `pxe_failed` at the sweep.

"In pxe since" is when the machine last entered `pxe`, read from its history: the newest
entry that changed its `state` (a create counts: its state changed from nothing). A PATCH of
tags or owner while in pxe is recorded too, but changes no `state`, so it does not reset the
clock, where `_updated` would. The history is read per machine in pxe by `{resource, name}`,
the key of the history's index (and of its GIN twins on the embedded database), so the cost is
one indexed lookup per machine in pxe, never a scan of the history. A machine whose history
has no such entry (written by a raw driver, or before history existed) falls back to
`_updated`, then `_created`, then its ObjectId's time.

The change is one conditional write on the version read (`{_id, state: "pxe", _etag}`) through
the wrapped db (atomic on FerretDB too): a PATCH in between wins, and the sweep leaves that
machine for its next pass; a PATCH after it gets 412 on the stale `_etag`.
"""

import datetime

from bson import ObjectId

from . import history
from .claims import stamp
from .context import NOBODY
from .dates import aware

DEFAULT_PXE_TIMEOUT = 3600  # seconds: 60 minutes
ACTION = "pxe_timeout"


def fail_stuck_pxe(core, timeout, actor=NOBODY):
    """Mark machines in pxe for longer than `timeout` seconds `pxe_failed`; return their hostnames.

    A timeout of 0 (or less, or None) switches the check off.
    """
    if not timeout or timeout <= 0:
        return []
    db, now = core.db, core.now()
    cutoff = now - datetime.timedelta(seconds=timeout)
    failed = []
    for machine in list(db.machines.find({"state": "pxe"})):
        started = _entered_pxe(db, machine) or _fallback_since(machine)
        if started is None or started >= cutoff:
            continue
        if _mark_failed(db, machine, started, timeout, actor, now):
            failed.append(machine["hostname"])
    return sorted(failed)


def _fallback_since(machine):
    for field in ("_updated", "_created"):
        if isinstance(machine.get(field), datetime.datetime):
            return aware(machine[field])
    return machine["_id"].generation_time if isinstance(machine["_id"], ObjectId) else None


def _entered_pxe(db, machine):
    """Return when the history says `machine` last entered pxe, or None if it does not say."""
    query = {"resource": "machines", "name": machine.get("hostname"), "item_id": str(machine["_id"]),
             "changes.state": {"$exists": True}}
    newest = None
    for entry in db[history.COLLECTION].find(query, {"at": 1, "changes.state": 1}):
        if isinstance(entry.get("at"), datetime.datetime) and (newest is None or entry["at"] >= newest["at"]):
            newest = entry
    # The newest state change must be the one into pxe; if not, the history missed a write: use _updated.
    if newest is None or newest["changes"]["state"].get("after") != "pxe":
        return None
    return aware(newest["at"])


def _mark_failed(db, machine, started, timeout, actor, now):
    fields = {"state": "pxe_failed"}
    result = db.machines.update_one({"_id": machine["_id"], "state": "pxe", "_etag": machine.get("_etag")},
                                    {"$set": stamp(machine, fields, now)})
    if result.matched_count != 1:
        return False  # changed since we read it: judged again at the next sweep
    minutes = (now - started).total_seconds() / 60
    reason = (f"in pxe since {started.strftime('%Y-%m-%dT%H:%M:%SZ')} ({minutes:.0f} min), "
              f"longer than the PXE timeout of {timeout / 60:g} min (RM_PXE_TIMEOUT={timeout:g} s)")
    after = dict(machine, **fields)
    history.record(db, "machines", after, ACTION, history.diff(machine, after), actor.because(reason), at=now)
    return True
