"""The sweep: reclaim expired leases and repair what crashed requests left behind.

Run it from cron with `rm-sweep` (or POST /reservations/sweep). Repairs wait
for a grace period (SWEEP_GRACE_SECONDS, default 120 s): a request still
working is never mistaken for a crashed one, because requests give up by
themselves after half of it.
"""

import argparse
import datetime
import json
import sys

import pymongo.errors
from pymongo.errors import DuplicateKeyError

from . import address_allocation
from .allocation import (
    ENDS,
    MACHINE_CLAIMS,
    RESERVATIONS,
    drop_machine_claim,
    finish_end,
    free_machine,
    reclaim_expired,
    undo,
)
from .history import utcnow

LOCKS = "locks"
DEFAULT_GRACE = 120
STALE_LOCK = datetime.timedelta(minutes=10)


def grace_seconds(app):
    """Return the configured grace period."""
    return int(app.config.get("SWEEP_GRACE_SECONDS", DEFAULT_GRACE))


def sweep(db, grace, user=None):
    """Expire leases and repair half-done work; return {"expired", "repaired", "released"}."""
    if not _lock(db):
        return {"expired": 0, "repaired": 0, "released": [], "skipped": "another sweep is running"}
    try:
        expired, released = reclaim_expired(db, user)
        cutoff = utcnow() - datetime.timedelta(seconds=grace)
        repaired, freed = _repair_reservations(db, cutoff)
        repaired += address_allocation.repair(db, cutoff)
        return {"expired": expired, "repaired": repaired, "released": sorted(set(released + freed))}
    finally:
        db[LOCKS].delete_one({"_id": "sweep"})


def _lock(db):
    # One sweep at a time; a lock left by a crashed sweep goes stale.
    for _attempt in range(2):
        try:
            db[LOCKS].insert_one({"_id": "sweep", "at": utcnow()})
            return True
        except DuplicateKeyError:
            lock = db[LOCKS].find_one({"_id": "sweep"})
            if lock is not None and utcnow() - lock["at"] < STALE_LOCK:
                return False
            if lock is not None:
                db[LOCKS].delete_one({"_id": "sweep", "at": lock["at"]})
    return False


def _repair_reservations(db, cutoff):
    repaired, freed = 0, []
    # A reserver that died mid-way: its reservation stays pending. Undo it.
    for res in list(db[RESERVATIONS].find({"state": "pending", "_created": {"$lt": cutoff}})):
        freed += undo(db, res)
        repaired += 1
    # An ender that died mid-way: its end marker exists, the reservation is still active. Finish it.
    active = {r["_id"]: r for r in db[RESERVATIONS].find({"state": "active"})}
    for marker in db[ENDS].find({"_id": {"$in": list(active)}}):
        if marker["at"] < cutoff:
            freed += finish_end(db, active.pop(marker["_id"]), marker["why"], marker.get("user"))
            repaired += 1
    # Claims whose reservation is gone or over, or does not list the machine; and machines that name
    # a reservation which does not hold them. Each is judged on a fresh read of its reservation, so
    # one that started after this sweep did is never mistaken for a stray.
    for claim in list(db[MACHINE_CLAIMS].find({"at": {"$lt": cutoff}})):
        if not _holds(db, claim["holder"], claim["_id"]):
            drop_machine_claim(db, claim["_id"], claim["holder"])
            repaired += 1
    for machine in list(db.machines.find({"reservation": {"$nin": [None]}})):
        rid = machine["reservation"]
        if _holds(db, rid, machine["hostname"]):
            continue
        if free_machine(db, machine, rid, "release", None, "sweep: held without a reservation"):
            freed.append(machine["hostname"])
            repaired += 1
    return repaired, freed


def _holds(db, rid, hostname):
    res = db[RESERVATIONS].find_one({"_id": rid}, {"state": 1, "hostnames": 1})
    if res is None:
        return False
    return res["state"] == "pending" or (res["state"] == "active" and hostname in res["hostnames"])


def main(argv=None):
    """rm-sweep: expire leases and repair half-done reservations (for cron)."""
    parser = argparse.ArgumentParser(prog="rm-sweep", description=main.__doc__)
    parser.add_argument("--grace", type=int, default=None,
                        help="repair only what is older than this many seconds (default: SWEEP_GRACE_SECONDS, "
                             f"{DEFAULT_GRACE}); 0 is safe only when no server is serving requests")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    from .app import create_app

    try:
        app = create_app()
        with app.app_context():
            app.extensions["rm_indexes"].ensure()
            db = app.data.driver.db
            result = sweep(db, grace_seconds(app) if args.grace is None else args.grace, "rm-sweep")
            for client, _db in app.extensions["pymongo"].values():
                client.close()
    except RuntimeError as e:
        print(f"rm-sweep: {e}", file=sys.stderr)
        return 2
    except pymongo.errors.PyMongoError as e:
        print(f"rm-sweep: database unavailable: {e}", file=sys.stderr)
        return 6
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
