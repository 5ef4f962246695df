"""The reservation queue: requests that wait their turn, granted in order of arrival.

A request made with a wait that cannot be met at once is stored `queued` (with `queued_at`, to
the millisecond, and `wait_until`) instead of being refused. A *granting pass* (serve) walks the
queue in order of arrival (`queued_at`, then `_id`), one granter at a time across every process
(the database mutex "queue": an insert, stale after STALE_GRANTER so a killed granter blocks
nobody for long):

- a request whose wait has run out becomes `timed_out`;
- a request that the free matching machines can meet is granted with the same claim protocol
  as any reservation (allocation.take: insert-unique claims decide, then machines in_use, then
  active): queued -> pending (conditional, so a cancel and a grant never both happen) -> active,
  its lease starting now; if the claims fail (a contender took a machine), it goes back to queued,
  keeping its place;
- a request that cannot be met *earmarks* the free machines matching it, up to its count: the
  requests behind it, and requests that do not wait while any do, may only take machines nobody
  ahead of them earmarked. So a large request is not starved by a stream of small ones: the
  machines freed one by one collect for it, and the small ones wait behind it.

Earmarks are not stored: each pass (and each request that does not wait) recomputes them from
the queue and the idle machines, so nothing is left to repair after a crash.
Passes run after every release, end, expiry or undo and machine change (the API triggers
them) and from a background ticker in every server process while anything is queued (api).
"""

import datetime
import json
import time

from . import allocation, history, mutex
from .allocation import NOT_ENDING, RESERVATIONS, AllocationError, Shortfall
from .history import utcnow

MUTEX = "queue"
STALE_GRANTER = datetime.timedelta(seconds=10)  # a granter holds the mutex at most PASS_BUDGET at a time
PASS_BUDGET = 3.0  # seconds of granting per pass; the next pass goes on
RECLAIM_EVERY = 1.0  # s: how often a pass may reclaim expired leases for waiters (a range read of reservations)
QUEUED = {"state": "queued"}

_last_reclaim = [0.0]


def waiting(db):
    """Return the queued reservations in order of arrival."""
    return sorted(db[RESERVATIONS].find(QUEUED), key=lambda r: (r.get("queued_at") or r["_created"], r["_id"]))


def anyone_waiting(db):
    """Return whether any reservation is queued (an equality read, cheap on every engine)."""
    return db[RESERVATIONS].find_one(QUEUED, {"_id": 1}) is not None


def position(queue, rid):
    """Return the 1-based place of `rid` in `queue` (from waiting()), or None."""
    for place, res in enumerate(queue, 1):
        if res["_id"] == rid:
            return place
    return None


class _Idle:
    """The idle machines matching each filter, read once per pass, sorted by hostname."""

    def __init__(self, db):
        self.db, self.by_filter = db, {}

    def matching(self, res):
        key = res["where"] if isinstance(res["where"], str) else json.dumps(res["where"] or {})
        if key not in self.by_filter:
            query = dict(json.loads(key), state="idle")
            self.by_filter[key] = sorted(self.db.machines.find(query, {"hostname": 1}), key=lambda m: m["hostname"])
        return self.by_filter[key]


def earmarked(db, queue=None):
    """Return the _ids of the idle machines earmarked for queued requests (see the module doc)."""
    queue = waiting(db) if queue is None else queue
    held, idle = set(), _Idle(db)
    for res in queue:
        free = [m for m in idle.matching(res) if m["_id"] not in held]
        held.update(m["_id"] for m in free[:res["count"]])
    return held


def serve(db, grace, wait=0.0):
    """Run one granting pass; return {"granted": [ids], "timed_out": [ids]}, or None if another granter holds it.

    `wait`: seconds to wait for the mutex (0: leave it to the granter at work).
    """
    deadline = time.monotonic() + wait
    while not mutex.try_take(db, MUTEX, STALE_GRANTER):
        if time.monotonic() >= deadline:
            return None
        time.sleep(mutex.POLL)
    try:
        outcome = _pass(db, grace)
        if outcome.pop("unmet") and time.monotonic() - _last_reclaim[0] > RECLAIM_EVERY:
            # Leases end lazily (a reservation that needs machines reclaims them); waiters need them too.
            _last_reclaim[0] = time.monotonic()
            if allocation.reclaim_expired(db)[0]:
                more = _pass(db, grace)
                outcome["granted"] += more["granted"]
                outcome["timed_out"] += more["timed_out"]
        return outcome
    finally:
        mutex.give_back(db, MUTEX)


def _pass(db, grace):
    outcome = {"granted": [], "timed_out": [], "unmet": False}
    queue = waiting(db)
    if not queue:
        return outcome
    held, idle = set(), _Idle(db)
    budget = time.monotonic() + PASS_BUDGET
    for res in queue:
        if res["wait_until"] <= allocation.precise_now():
            if time_out(db, res):
                outcome["timed_out"].append(res["_id"])
            continue
        free = [m for m in idle.matching(res) if m["_id"] not in held]
        if len(free) >= res["count"] and time.monotonic() < budget:
            granted = _grant(db, res, free, grace)
            if granted is not None:
                outcome["granted"].append(res["_id"])
                held.update(granted["machine_ids"])
                continue
        outcome["unmet"] = True
        held.update(m["_id"] for m in free[:res["count"]])
    return outcome


def _grant(db, res, free, grace):
    rid = res["_id"]
    now = utcnow()
    result = db[RESERVATIONS].update_one({"_id": rid, "state": "queued"},
                                         {"$set": {"state": "pending", "granting_at": now, "_updated": now}})
    if result.matched_count != 1:
        return None  # cancelled or timed out meanwhile
    pending = dict(res, state="pending", granting_at=now)
    try:
        granted = allocation.take(db, pending, grace, pool=free, settle=False)
    except (Shortfall, AllocationError):
        requeue(db, rid)
        return None
    history.record_reservation(db, granted, "granted", "queued", at=granted["_updated"])
    return granted


def requeue(db, rid):
    """Put a reservation whose grant failed (holding nothing) back in line, at its old place."""
    db[RESERVATIONS].update_one({"_id": rid, "state": "pending", "ending": NOT_ENDING},
                                {"$set": {"state": "queued", "_updated": utcnow()}, "$unset": {"granting_at": ""}})


def time_out(db, res):
    """End a queued reservation whose wait ran out; return whether we did."""
    now = utcnow()
    result = db[RESERVATIONS].update_one({"_id": res["_id"], "state": "queued"},
                                         {"$set": {"state": "timed_out", "ended": now, "_updated": now}})
    if result.matched_count != 1:
        return False
    history.record_reservation(db, dict(res, state="timed_out"), "timed_out", "queued", reason="wait ran out",
                               at=now)
    return True


def cancel(db, rid, user=None, reason=None):
    """Cancel queued reservation `rid`; return its state afterwards, or None if unknown.

    Raises AllocationError 503 while it is being granted (retry: it is then active, and DELETE releases it).
    """
    now = utcnow()
    result = db[RESERVATIONS].update_one({"_id": rid, "state": "queued"},
                                         {"$set": {"state": "cancelled", "ended": now, "ended_by": user,
                                                   "_updated": now}})
    res = db[RESERVATIONS].find_one({"_id": rid})
    if res is None:
        return None
    if result.matched_count == 1:
        history.record_reservation(db, res, "cancelled", "queued", user, reason, at=now)
    elif res["state"] == "pending":
        raise AllocationError(f"reservation {rid} is being granted; retry shortly", 503)
    return res["state"]


def repair(db, res):
    """Put a reservation that a crashed granter left pending (and the sweep took over) back in line.

    Its claims and machines were given back by the sweep; a wait that ran out meanwhile ends it.
    """
    now = utcnow()
    state = "timed_out" if res["wait_until"] <= allocation.precise_now() else "queued"
    fields = {"state": state, "_updated": now}
    if state == "timed_out":
        fields["ended"] = now
    result = db[RESERVATIONS].update_one({"_id": res["_id"], "state": "pending"},
                                         {"$set": fields, "$unset": {"ending": "", "granting_at": ""}})
    if result.matched_count == 1 and state == "timed_out":
        history.record_reservation(db, dict(res, state=state), "timed_out", "queued", reason="wait ran out", at=now)
