"""The sweep: reclaim expired leases, fail machines stuck in pxe, repair what crashed requests left behind.

Last, it recounts the counters kept beside the data (counts.py) and corrects any drift.

Run it from cron or supervisord with `rm-sweep` (or POST /reservations/sweep). A machine in `pxe`
for longer than the policy's pxe_timeout becomes `pxe_failed` (lifecycle.py). Repairs wait for a
grace period (the policy's grace_seconds, default 120 s): a request still working is never
mistaken for a crashed one, because requests give up by themselves after half of it. Leases and
heartbeats also end without any sweep: every server process's upkeep ticker ends them as they run
out (api/upkeep.py); the sweep is the backstop.
"""

import datetime

from . import addresses as address_allocation
from . import counts, mutex, pending, queue
from .claims import drop_machine_claim, rekey_legacy_claims, return_machine
from .context import NOBODY, Actor
from .ending import complete_ending, end, expire_due, give_default_leases
from .lifecycle import fail_stuck_pxe
from .pending import NOT_ENDING
from .reserving import give_back, roll_back
from .store import ENDS, MACHINE_CLAIMS, MACHINES, RESERVATIONS

STALE_LOCK = datetime.timedelta(minutes=10)


def sweep(core, grace=None, actor=NOBODY):
    """Expire leases, fail machines stuck in pxe, repair half-done work, then run a granting pass.

    Returns {"expired", "repaired", "released", "pxe_failed", "leases_given"} (pxe_failed: how many
    machines), and "queue" when its granting pass did something.
    """
    grace = core.policy.grace_seconds if grace is None else grace
    if not mutex.try_take(core, "sweep", STALE_LOCK):
        return {"expired": 0, "repaired": 0, "released": [], "pxe_failed": 0, "leases_given": 0,
                "skipped": "another sweep is running"}
    try:
        leases_given = give_default_leases(core)
        expired, released = expire_due(core, actor)
        cutoff = core.now() - datetime.timedelta(seconds=grace)
        repaired, freed = _repair_reservations(core, cutoff)
        repaired += address_allocation.repair(core, cutoff)
        pxe_failed = fail_stuck_pxe(core, core.policy.pxe_timeout, actor)
        repaired += len(counts.recount(core.db) or [])  # last: after every repair above
        result = {"expired": expired, "repaired": repaired, "released": sorted(set(released + freed)),
                  "pxe_failed": len(pxe_failed), "leases_given": leases_given}
    finally:
        mutex.give_back(core, "sweep")
    # A granting pass (waits run out, freed machines go to waiters); reported only when it did something.
    served = queue.serve(core, wait=2.0) if queue.anyone_waiting(core) else None
    if served and (served["granted"] or served["timed_out"]):
        result["queue"] = {"granted": served["granted"], "timed_out": served["timed_out"]}
    return result


def _repair_reservations(core, cutoff):
    db = core.db
    repaired, freed = rekey_legacy_claims(core), []
    # A reserver that died mid-way: its reservation stays pending. Take it over (so that a reserver
    # still alive cannot make it active after all), then roll it back.
    # One that a granter was granting from the queue goes back in line (or times out): judged by when
    # the grant began, not when the request came.
    for res in list(db[RESERVATIONS].find({"state": "pending", "_created": {"$lt": cutoff}})):
        if res.get("granting_at") is not None and res["granting_at"] >= cutoff:
            continue
        if res.get("ending") or pending.take_over(core, RESERVATIONS, res["_id"]):
            if res.get("granting_at") is not None:
                freed += give_back(core, res["_id"])
                queue.recover(core, res)
            else:
                freed += roll_back(core, res)
            repaired += 1
    # An ender that died mid-way: the reservation is still active, marked `ending`. Finish it.
    for res in list(db[RESERVATIONS].find({"state": "active", "ending": {"$exists": True},
                                           "ended": {"$lt": cutoff}})):
        freed += complete_ending(core, res)
        repaired += 1
    # The same left by an earlier version: an end marker on a still-active reservation.
    for marker in list(db[ENDS].find({"at": {"$lt": cutoff}})):
        res = db[RESERVATIONS].find_one({"_id": marker["_id"], "state": "active", "ending": NOT_ENDING})
        if res is not None:
            freed += end(core, res, "released", Actor(marker.get("user"))) or []
            repaired += 1
        db[ENDS].delete_one({"_id": marker["_id"]})
    # Claims whose reservation is gone or over, or does not list the machine; and machines that name
    # a reservation which does not hold them. Each is judged on a fresh read of its reservation, so
    # one that started after this sweep did is never mistaken for a stray.
    for claim in list(db[MACHINE_CLAIMS].find({"at": {"$lt": cutoff}})):
        if not _holds(core, claim["holder"], claim["_id"]):
            drop_machine_claim(core, claim["_id"], claim["holder"])
            repaired += 1
    for machine in list(db[MACHINES].find({"reservation": {"$nin": [None]}})):
        rid = machine["reservation"]
        if _holds(core, rid, machine["_id"]):
            continue
        if return_machine(core, machine, rid, "release", Actor(reason="sweep: held without a reservation")):
            freed.append(machine["hostname"])
            repaired += 1
    return repaired, freed


def _holds(core, rid, machine_id):
    res = core.db[RESERVATIONS].find_one({"_id": rid}, {"state": 1, "machine_ids": 1})
    if res is None:
        return False
    return res["state"] == "pending" or (res["state"] == "active" and machine_id in res.get("machine_ids", []))
