"""The reservation queue: requests that wait their turn, granted in order of arrival.

A request made with a wait that cannot be met at once is stored `queued` (with `queued_at`, to
the millisecond, and `wait_until`) instead of being refused. A *granting pass* (serve) walks the
queue in order of arrival (`queued_at`, then `_id`), one granter at a time across every process
(the database mutex "queue": an insert, stale after STALE_GRANTER so a killed granter blocks
nobody for long):

- a request whose wait has run out becomes `timed_out`;
- a request that the free matching machines can meet is granted with the same claim protocol
  as any reservation (reserving.take: insert-unique claims decide, then machines in_use, then
  active): queued -> pending (conditional, so a cancel and a grant never both happen) -> active,
  its lease starting now; if the claims fail (a contender took a machine), it goes back to queued,
  keeping its place (`return_to_line`);
- a request that cannot be met *earmarks* the free machines matching it, up to its count: the
  requests behind it, and requests that do not wait while any do, may only take machines nobody
  ahead of them earmarked. So a large request is not starved by a stream of small ones: the
  machines freed one by one collect for it, and the small ones wait behind it.

Earmarks are not stored: each pass (and each request that does not wait) recomputes them from
the queue and the idle machines, so nothing is left to repair after a crash. A request whose wait
has run out earmarks nothing, even before a pass times it out.
Passes run after every release, end, expiry or undo and machine change (the API triggers
them) and from the upkeep ticker of every server process (api/upkeep.py).
"""

import datetime
import json

from . import history, mutex
from .context import NOBODY, Actor
from .errors import AllocationError, Shortfall
from .pending import NOT_ENDING
from .store import MACHINES, RESERVATIONS

MUTEX = "queue"
STALE_GRANTER = datetime.timedelta(seconds=10)  # a granter holds the mutex at most PASS_BUDGET at a time
PASS_BUDGET = 3.0  # seconds of granting per pass; the next pass goes on
QUEUED = {"state": "queued"}


def waiting(core):
    """Return the queued reservations in order of arrival."""
    return sorted(core.db[RESERVATIONS].find(QUEUED), key=lambda r: (r.get("queued_at") or r["_created"], r["_id"]))


def anyone_waiting(core):
    """Return whether any reservation is queued (an equality read, cheap on every engine)."""
    return core.db[RESERVATIONS].find_one(QUEUED, {"_id": 1}) is not None


def position(queue, rid):
    """Return the 1-based place of `rid` in `queue` (from waiting()), or None."""
    for place, res in enumerate(queue, 1):
        if res["_id"] == rid:
            return place
    return None


class _Idle:
    """The idle machines matching each filter, read once per pass, sorted by hostname."""

    def __init__(self, core):
        self.core, self.by_filter = core, {}

    def matching(self, res):
        key = res["where"] if isinstance(res["where"], str) else json.dumps(res["where"] or {})
        if key not in self.by_filter:
            query = dict(json.loads(key), state="idle")
            self.by_filter[key] = sorted(self.core.db[MACHINES].find(query, {"hostname": 1}),
                                         key=lambda m: m["hostname"])
        return self.by_filter[key]


def earmarked(core, queue=None):
    """Return the _ids of the idle machines earmarked for queued requests (see the module doc)."""
    queue = waiting(core) if queue is None else queue
    now = core.now()
    held, idle = set(), _Idle(core)
    for res in queue:
        if res["wait_until"] <= now:
            continue  # its wait ran out: it is timed out at the next pass, and holds nothing meanwhile
        free = [m for m in idle.matching(res) if m["_id"] not in held]
        held.update(m["_id"] for m in free[:res["count"]])
    return held


def enqueue(core, res, actor=NOBODY):
    """Turn our pending reservation (holding nothing) into a queued one; return it.

    Raises AllocationError 503 when a sweep took it over meanwhile (nothing kept).
    """
    now = core.now()
    result = core.db[RESERVATIONS].update_one({"_id": res["_id"], "state": "pending", "ending": NOT_ENDING},
                                              {"$set": {"state": "queued", "_updated": now}})
    if result.matched_count != 1:
        raise AllocationError("reservation was repaired by a sweep while being made; retry", 503)
    queued = dict(res, state="queued", _updated=now)
    history.record_reservation(core.db, queued, "queued", "pending", actor, at=now)
    return queued


def serve(core, wait=0.0):
    """Run one granting pass; return {"granted": [ids], "timed_out": [ids]}, or None if another granter holds it.

    `wait`: seconds to wait for the mutex (0: leave it to the granter at work).
    """
    try:
        with mutex.holding(core, MUTEX, wait=wait, stale=STALE_GRANTER):
            return _pass(core)
    except mutex.Busy:
        return None


def _pass(core):
    outcome = {"granted": [], "timed_out": []}
    queue = waiting(core)
    if not queue:
        return outcome
    held, idle = set(), _Idle(core)
    budget = core.clock.monotonic() + PASS_BUDGET
    for res in queue:
        if res["wait_until"] <= core.now():
            if time_out(core, res):
                outcome["timed_out"].append(res["_id"])
            continue
        free = [m for m in idle.matching(res) if m["_id"] not in held]
        if len(free) >= res["count"] and core.clock.monotonic() < budget:
            granted = _grant(core, res, free)
            if granted is not None:
                outcome["granted"].append(res["_id"])
                held.update(granted["machine_ids"])
                continue
        held.update(m["_id"] for m in free[:res["count"]])
    return outcome


def _grant(core, res, free):
    from .reserving import take

    rid = res["_id"]
    now = core.now()
    result = core.db[RESERVATIONS].update_one({"_id": rid, "state": "queued"},
                                              {"$set": {"state": "pending", "granting_at": now, "_updated": now}})
    if result.matched_count != 1:
        return None  # cancelled or timed out meanwhile
    try:
        return take(core, dict(res, state="pending", granting_at=now), pool=free, settle=False, reclaim=False)
    except (Shortfall, AllocationError):
        return_to_line(core, rid)
        return None


def return_to_line(core, rid):
    """Put a reservation whose grant failed (holding nothing) back in line, at its old place."""
    core.db[RESERVATIONS].update_one({"_id": rid, "state": "pending", "ending": NOT_ENDING},
                                     {"$set": {"state": "queued", "_updated": core.now()},
                                      "$unset": {"granting_at": ""}})


def time_out(core, res, reason="wait ran out"):
    """End a queued reservation whose wait ran out; return whether we did."""
    now = core.now()
    result = core.db[RESERVATIONS].update_one({"_id": res["_id"], "state": "queued"},
                                              {"$set": {"state": "timed_out", "ended": now, "end_reason": reason,
                                                        "_updated": now}})
    if result.matched_count != 1:
        return False
    history.record_reservation(core.db, dict(res, state="timed_out"), "timed_out", "queued", Actor(reason=reason),
                               at=now)
    return True


def cancel(core, res, actor=NOBODY):
    """Cancel the queued reservation `res`; return whether we did (False: it is no longer queued)."""
    now = core.now()
    result = core.db[RESERVATIONS].update_one(
        {"_id": res["_id"], "state": "queued"},
        {"$set": {"state": "cancelled", "ended": now, "ended_by": actor.user, "end_reason": actor.reason,
                  "_updated": now}})
    if result.matched_count != 1:
        return False
    history.record_reservation(core.db, dict(res, state="cancelled"), "cancelled", "queued", actor, at=now)
    return True


def recover(core, res):
    """Put a reservation that a crashed granter left pending (and the sweep took over) back in line.

    Its claims and machines were given back by the sweep; a wait that ran out meanwhile ends it.
    """
    now = core.now()
    state = "timed_out" if res["wait_until"] <= now else "queued"
    fields = {"state": state, "_updated": now}
    if state == "timed_out":
        fields.update(ended=now, end_reason="wait ran out")
    result = core.db[RESERVATIONS].update_one({"_id": res["_id"], "state": "pending"},
                                              {"$set": fields, "$unset": {"ending": "", "granting_at": ""}})
    if result.matched_count == 1 and state == "timed_out":
        history.record_reservation(core.db, dict(res, state=state), "timed_out", "queued",
                                   Actor(reason="wait ran out"), at=now)
