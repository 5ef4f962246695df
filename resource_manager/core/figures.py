"""What the database holds, counted for /metrics: machines and reservations by state, pools' addresses.

Four reads in all, whatever the fleet: one $group by state on machines, one on reservations, the
pools, and the address claims (kind and key only). Each is a pass over its collection on FerretDB
(it groups and filters in Go), so these run at scrape time, never on a request's path. Machines by
state and pools' allocated addresses come from the counts kept beside the data when they are
exact (counts.py): reads by `_id` instead of two of those passes.
"""

import bisect
import time

from ..schema import MACHINE_STATES
from . import counts
from .addresses import pool_ranges
from .ipranges import count_usable, size
from .store import ADDRESS_CLAIMS, POOLS, RESERVATIONS

# Always reported, 0 when none: a state that appears later would otherwise start a new series mid-graph.
RESERVATION_STATES = ("pending", "active")
QUEUED = "queued"


def _by_state(collection, always):
    counts = dict.fromkeys(always, 0)
    for row in collection.aggregate([{"$group": {"_id": "$state", "n": {"$sum": 1}}}]):
        # A document without a state (written around the API) is counted as "" rather than lost.
        counts[row["_id"] if isinstance(row["_id"], str) else ""] = row["n"]
    return counts


def _claimed_numbers(db):
    """Return {(kind, ip version): sorted integer addresses holding a claim}."""
    found = {}
    for claim in db[ADDRESS_CLAIMS].find({}, {"kind": 1, "ipkey": 1, "_id": 0}):
        key = claim.get("ipkey")
        if not isinstance(key, str) or ":" not in key:
            continue
        version, number = key.split(":", 1)
        found.setdefault((claim.get("kind"), int(version)), []).append(int(number, 16))
    for numbers in found.values():
        numbers.sort()
    return found


def pools(db):
    """Return [{"name", "kind", "allocated", "free"}] of every pool, as GET /address-pools counts them."""
    claimed = None
    result = []
    for pool in db[POOLS].find({}, {"name": 1, "kind": 1, "cidr": 1, "exclude": 1, "ranges": 1}).sort("name", 1):
        network, excluded = pool_ranges(pool)
        allocated = counts.pool_allocated(db, pool)
        if allocated is None:
            claimed = _claimed_numbers(db) if claimed is None else claimed
            numbers = claimed.get((pool["kind"], network.version), [])
            low = bisect.bisect_left(numbers, int(network.network_address))
            high = bisect.bisect_right(numbers, int(network.broadcast_address))
            allocated = count_usable(numbers[low:high], excluded)
        result.append({"name": pool["name"], "kind": pool["kind"], "allocated": allocated,
                       "free": size(network, excluded) - allocated})
    return result


def read(db):
    """Return the figures: {"machines": {state: n}, "reservations": {state: n}, "pools": [...], "seconds"}."""
    started = time.perf_counter()
    kept = counts.machine_counts(db)
    figures = {
        "machines": kept["states"] if kept is not None else _by_state(db.machines, MACHINE_STATES),
        "reservations": _by_state(db[RESERVATIONS], RESERVATION_STATES),
        "pools": pools(db),
    }
    figures["seconds"] = time.perf_counter() - started
    return figures
