"""The sweep: reclaim expired leases, fail machines stuck in pxe, repair what crashed requests left behind.

Run it from cron with `rm-sweep` (or POST /reservations/sweep). A machine in `pxe` for longer
than PXE_TIMEOUT (seconds, default 3600) becomes `pxe_failed` (lifecycle.py). Repairs wait
for a grace period (SWEEP_GRACE_SECONDS, default 120 s): a request still
working is never mistaken for a crashed one, because requests give up by
themselves after half of it.
"""

import datetime

from . import addresses as address_allocation
from . import mutex, queue
from .allocation import (
    ENDS,
    MACHINE_CLAIMS,
    NOT_ENDING,
    RESERVATIONS,
    drop_machine_claim,
    end_reservation,
    finish_end,
    free_machine,
    let_go,
    reclaim_expired,
    rekey_legacy_claims,
    take_over_pending,
    undo,
)
from .history import utcnow
from .lifecycle import DEFAULT_PXE_TIMEOUT, fail_stuck_pxe

DEFAULT_GRACE = 120
STALE_LOCK = datetime.timedelta(minutes=10)


def grace_seconds(app):
    """Return the configured grace period."""
    return int(app.config.get("SWEEP_GRACE_SECONDS", DEFAULT_GRACE))


def pxe_timeout_seconds(app):
    """Return the configured PXE timeout in seconds (0: never)."""
    return app.config.get("PXE_TIMEOUT", DEFAULT_PXE_TIMEOUT)


def sweep(db, grace, user=None, pxe_timeout=DEFAULT_PXE_TIMEOUT):
    """Expire leases, fail machines stuck in pxe, repair half-done work.

    Returns {"expired", "repaired", "released", "pxe_failed"} (pxe_failed: how many machines).
    """
    if not mutex.try_take(db, "sweep", STALE_LOCK):
        return {"expired": 0, "repaired": 0, "released": [], "pxe_failed": 0,
                "skipped": "another sweep is running"}
    try:
        expired, released = reclaim_expired(db, user)
        cutoff = utcnow() - datetime.timedelta(seconds=grace)
        repaired, freed = _repair_reservations(db, cutoff)
        repaired += address_allocation.repair(db, cutoff)
        pxe_failed = fail_stuck_pxe(db, pxe_timeout, user)
        result = {"expired": expired, "repaired": repaired, "released": sorted(set(released + freed)),
                  "pxe_failed": len(pxe_failed)}
    finally:
        mutex.give_back(db, "sweep")
    # A granting pass (waits run out, freed machines go to waiters); reported only when it did something.
    served = queue.serve(db, grace, wait=2.0) if queue.anyone_waiting(db) else None
    if served and (served["granted"] or served["timed_out"]):
        result["queue"] = served
    return result


def _repair_reservations(db, cutoff):
    repaired, freed = rekey_legacy_claims(db), []
    # A reserver that died mid-way: its reservation stays pending. Take it over (so that a reserver
    # still alive cannot make it active after all), then undo it.
    # One that a granter was granting from the queue goes back in line (or times out): judged by when
    # the grant began, not when the request came.
    for res in list(db[RESERVATIONS].find({"state": "pending", "_created": {"$lt": cutoff}})):
        if res.get("granting_at") is not None and res["granting_at"] >= cutoff:
            continue
        if res.get("ending") or take_over_pending(db, RESERVATIONS, res["_id"]):
            if res.get("granting_at") is not None:
                freed += let_go(db, res["_id"])
                queue.repair(db, res)
            else:
                freed += undo(db, res)
            repaired += 1
    # An ender that died mid-way: the reservation is still active, marked `ending`. Finish it.
    for res in list(db[RESERVATIONS].find({"state": "active", "ending": {"$exists": True},
                                           "ended": {"$lt": cutoff}})):
        freed += finish_end(db, res, res["ending"], res.get("ended_by"))
        repaired += 1
    # The same left by an earlier version: an end marker on a still-active reservation.
    for marker in list(db[ENDS].find({"at": {"$lt": cutoff}})):
        res = db[RESERVATIONS].find_one({"_id": marker["_id"], "state": "active", "ending": NOT_ENDING})
        if res is not None:
            freed += end_reservation(db, res, "released", marker.get("user")) or []
            repaired += 1
        db[ENDS].delete_one({"_id": marker["_id"]})
    # Claims whose reservation is gone or over, or does not list the machine; and machines that name
    # a reservation which does not hold them. Each is judged on a fresh read of its reservation, so
    # one that started after this sweep did is never mistaken for a stray.
    for claim in list(db[MACHINE_CLAIMS].find({"at": {"$lt": cutoff}})):
        if not _holds(db, claim["holder"], claim["_id"]):
            drop_machine_claim(db, claim["_id"], claim["holder"])
            repaired += 1
    for machine in list(db.machines.find({"reservation": {"$nin": [None]}})):
        rid = machine["reservation"]
        if _holds(db, rid, machine["_id"]):
            continue
        if free_machine(db, machine, rid, "release", None, "sweep: held without a reservation"):
            freed.append(machine["hostname"])
            repaired += 1
    return repaired, freed


def _holds(db, rid, machine_id):
    res = db[RESERVATIONS].find_one({"_id": rid}, {"state": 1, "machine_ids": 1})
    if res is None:
        return False
    return res["state"] == "pending" or (res["state"] == "active" and machine_id in res.get("machine_ids", []))


