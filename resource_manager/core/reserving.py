"""Reserving machines: a pending reservation claims machines, takes them, and becomes active.

    open (pending: pending.py) -> claim machines -> machines in_use (if unchanged) -> active (if still pending)

Each step is a conditional write atomic on every engine (atomic.py) or an insert that collides on a
unique key. A crash at any step leaves the reservation `pending`, which the sweep takes over and
rolls back (`roll_back`: machines idle, claims dropped, reservation deleted), so every reservation
is complete or absent. A grant from the queue uses the same steps (queue.py); its reservation goes
back in line instead of being deleted.

Give-back verbs, by the step they undo:
- `give_back(core, rid, machines)`: what a pending reservation claimed or took (machines idle, claims dropped);
- `roll_back(core, res)`: a pending reservation entirely (give_back, then the document deleted).
"""

import datetime
import json
import random

from . import history, pending
from .candidates import Candidates
from .claims import claim_machine, drop_machine_claim, return_machine, set_machine
from .constraints import fingerprint
from .context import Actor
from .errors import AllocationError, Impossible, QuotaExceeded, Shortfall
from .pending import NOT_ENDING
from .store import MACHINE_CLAIMS, MACHINES, RESERVATIONS

ENDED = ("released", "expired", "cancelled", "timed_out")
CANDIDATE_BATCH = 64  # idle machines read at a time when reserving (see _claim_candidates)
SETTLE_POLL = 0.02  # s between looks at contenders we wait for (see _settle)
SETTLE_SECONDS = 30  # a contender pending for longer is taken for crashed: it counts as holding
CLAIM_WAIT = 3  # s we wait for the claims of contenders being made (milliseconds of work); then: crashed
MAX_ATTEMPTS = 3


def new_request(core, req, user, key=None, queue=None):
    """Return a function building the pending reservation document of request `req` (see pending.open_request)."""
    rid = pending.request_id("res-", user, key)
    lease = req.get("lease_seconds") or core.policy.default_lease_seconds

    def make():
        now = core.now()
        # `where` is kept as JSON text: its dotted keys (tags.memory) are not valid stored field names.
        doc = dict(req, where=json.dumps(req.get("where") or {}), _id=rid, state="pending", user=user,
                   idempotency_key=key, fingerprint=fingerprint(req), lease_seconds=lease,
                   heartbeat_seconds=req.get("heartbeat_seconds") or None, priority=req.get("priority", 50),
                   hostnames=[], machine_ids=[], expires=None, _created=now, _updated=now)
        doc.pop("wait_seconds", None)
        if queue:
            doc.update(queued_at=now, wait_seconds=queue["wait_seconds"],
                       wait_until=now + datetime.timedelta(seconds=queue["wait_seconds"]))
        return doc

    return make


def reserve(core, req, user, key=None, wait_seconds=0):
    """Reserve req["count"] idle machines matching req["where"]; return (reservation, replayed).

    Without a wait, it is met now or refused. With `wait_seconds`, a request that cannot be met now
    joins the line (the reservation comes back `queued`; the caller runs a granting pass). While
    others wait, the scheduling rule decides (queue.take_now, queue.enqueue): what the line waits for
    goes to it first. A request that can never be met is refused either way.
    Raises Impossible (409), Shortfall (409, nothing taken), QuotaExceeded (429) or AllocationError.
    """
    from . import queue as line  # the queue grants with take(): it imports this module

    res, replayed = pending.open_request(
        core, RESERVATIONS, new_request(core, req, user, key, {"wait_seconds": wait_seconds} if wait_seconds else None),
        fingerprint(req), ended=ENDED)
    if replayed:
        return res, True
    try:
        if line.anyone_waiting(core):
            if wait_seconds:
                _check_possible(core, res)
                return line.enqueue(core, res, Actor(user)), False
            return line.take_now(core, res), False
        if not _within_quota(core, res):
            if wait_seconds:
                return line.enqueue(core, res, Actor(user)), False  # it waits for its user's reservations
            raise QuotaExceeded(f"{user} holds machines such that {res['count']} more would pass the per-user limit "
                                f"of {core.policy.max_machines_per_user} (RM_QUEUE_MAX_MACHINES_PER_USER)")
        try:
            return take(core, res), False
        except Shortfall:
            _check_possible(core, res)
            if wait_seconds:
                return line.enqueue(core, res, Actor(user)), False
            raise
    except BaseException:
        core.db[RESERVATIONS].delete_one({"_id": res["_id"], "state": "pending"})
        raise


def _check_possible(core, res):
    """Refuse a request for more machines than will ever match it (in any state, or the per-user limit)."""
    from . import queue as line

    limit = core.policy.max_machines_per_user
    if limit and res["count"] > limit:
        raise Impossible(res["count"], limit, f"requested {res['count']} machines, more than the per-user limit "
                                              f"of {limit} (RM_QUEUE_MAX_MACHINES_PER_USER): it can never be met")
    matching = line.matching_count(core, _where(res))
    if res["count"] > matching:
        raise Impossible(res["count"], matching)


def _within_quota(core, res):
    """Return whether the user's active reservations leave room for this one (always, without a limit)."""
    limit = core.policy.max_machines_per_user
    if not limit:
        return True
    if res["count"] > limit:
        _check_possible(core, res)  # raises Impossible
    held = sum(r.get("count") or 0 for r in core.db[RESERVATIONS].find({"state": "active", "user": res.get("user")},
                                                                        {"count": 1}))
    return held + res["count"] <= limit


def take(core, res, pool=None, settle=True, reclaim=True):
    """Claim, then take, res["count"] machines for the pending `res`, and make it active; return it.

    `pool`: the candidates to try (default: this process's pass over the matching idle machines).
    `reclaim`: whether a shortfall may first end expired leases (not while others wait).
    With `settle`, a shortfall caused by machines that
    contenders still being made hold is not final: we let go of everything, wait for them to
    settle, and try again (see _settle); a Shortfall means that, once they settled, fewer
    matching machines than asked were free. On any failure every claim and machine taken is
    given back; the reservation document is the caller's to delete or requeue.
    Raises Shortfall, or AllocationError 503 (too slow, or taken over by a sweep).
    """
    from .ending import expire_due

    rid, count = res["_id"], res["count"]
    deadline = core.clock.monotonic() + core.policy.grace_seconds / 2
    claimed, taken = [], []
    contended, first = {}, list(pool) if pool is not None else None
    try:
        reclaimed, attempt, looked, suspects = not reclaim, 0, pool is not None or not settle, set()
        while len(taken) < count:
            claimed += _claim_candidates(core, res, count - len(taken) - len(claimed), contended, first)
            if first is not None and pool is None:
                first = None  # the contended machines were retried once; back to the pass
                claimed += _claim_candidates(core, res, count - len(taken) - len(claimed), contended)
            if len(taken) + len(claimed) < count and not reclaimed:
                reclaimed = True
                if expire_due(core)[0]:
                    continue
            if len(taken) + len(claimed) < count and not looked:
                # The process's pass is shared: it need not have offered us every idle machine. One look
                # of our own at all of them, so that every machine a contender holds is noted.
                looked = True
                claimed += _claim_candidates(core, res, count - len(taken) - len(claimed), contended,
                                             _idle_now(core, res))
            if len(taken) + len(claimed) < count:
                waiting = _unsettled_holders(core, rid, contended, suspects) if settle else None
                if waiting is None:
                    raise Shortfall(count, len(taken) + len(claimed))
                # Contenders may be waiting for what we hold, as we wait for theirs: let go first, then
                # try again what we let go and every machine a contender held (`contended` accumulates).
                give_back(core, rid, claimed + taken)
                first = list(contended.values()) + claimed + taken
                claimed, taken = [], []
                suspects |= _settle(core, waiting, deadline, attempt)
                attempt += 1
                continue
            if core.clock.monotonic() > deadline:
                # Past grace/2 the sweep may soon judge us crashed; give up cleanly instead.
                raise AllocationError("reservation took too long; nothing reserved, retry", 503)
            fields = {"state": "in_use", "owner": res["owner"], "job_id": res["job_id"], "reservation": rid}
            actor = Actor(res["user"], res.get("reason"), res.get("job_id"))
            for machine in claimed:
                # Still idle in the version we read just after claiming: a write in between makes us let go.
                if set_machine(core, machine, fields, {"_etag": machine.get("_etag"), "state": "idle"}, "reserve",
                               actor):
                    taken.append(machine)
                else:
                    drop_machine_claim(core, machine["_id"], rid)
            claimed = []
        return _activate(core, res, taken)
    except BaseException:
        give_back(core, rid, claimed + taken)
        raise


def _activate(core, res, taken):
    """Make the pending reservation `res` active with the machines `taken`; return it. Raises AllocationError 503."""
    now = core.now()
    lease = res.get("lease_seconds") or core.policy.default_lease_seconds
    expires = now + datetime.timedelta(seconds=lease)
    update = {"state": "active", "hostnames": sorted(m["hostname"] for m in taken),
              "machine_ids": [m["_id"] for m in taken], "lease_seconds": lease, "expires": expires,
              "granted_at": now, "_updated": now, **heartbeat_fields(res, now, expires)}
    if res.get("must_end_by") is not None:
        # Granted ahead of the line by backfill: the machines are earmarked from then on (ending.extend caps).
        update["must_end_by"] = res["must_end_by"]
    # Only if still pending and not being undone by a sweep that judged us dead.
    result = core.db[RESERVATIONS].update_one({"_id": res["_id"], "state": "pending", "ending": NOT_ENDING},
                                              {"$set": update, "$unset": {"granting_at": ""}})
    if result.matched_count != 1:
        raise AllocationError("reservation was repaired by a sweep while being made; retry", 503)
    granted = dict(res, **update)
    before = "queued" if res.get("queued_at") is not None else "pending"
    history.record_reservation(core.db, granted, "granted", before, Actor(res.get("user"), res.get("reason")),
                               at=now, changes={"hostnames": {"before": [], "after": update["hostnames"]}})
    return granted


def heartbeat_fields(res, now, expires, heartbeat_seconds=None):
    """Return the lease-end fields of a reservation beating now: heartbeat_at/_due and ends_at (the earlier end)."""
    beat = heartbeat_seconds if heartbeat_seconds is not None else res.get("heartbeat_seconds")
    if not beat:
        return {"heartbeat_seconds": None, "heartbeat_at": None, "heartbeat_due": None, "ends_at": expires}
    due = now + datetime.timedelta(seconds=beat)
    return {"heartbeat_seconds": beat, "heartbeat_at": now, "heartbeat_due": due,
            "ends_at": min(due, expires) if expires is not None else due}


def _where(res):
    return json.loads(res["where"]) if isinstance(res["where"], str) else dict(res["where"] or {})


def _idle_now(core, res):
    return list(core.db[MACHINES].find(dict(_where(res), state="idle"), {"hostname": 1}))


def _settle(core, waiting, deadline, attempt):
    """Wait until each claim in `waiting` ({machine _id: holder}) is settled, then a little random time.

    A claim is settled once it is gone or held by someone else (its holder let go), or its holder
    is no longer being made. Waiting on claims, not on whole requests, means no cycle: a request
    that waits holds no claim, and one that holds claims is claiming (a matter of milliseconds).
    So a claim still held after CLAIM_WAIT is taken for a crashed holder's: return those holders.
    The random time keeps requests that let go together from colliding again in lockstep.
    Raises AllocationError 503 at `deadline`.
    """
    clock = core.clock
    given_up = clock.monotonic() + CLAIM_WAIT
    while waiting and clock.monotonic() < given_up:
        if clock.monotonic() >= deadline:
            # Not a 409: the contenders may yet fail and free what we need.
            raise AllocationError("contending reservations took too long to settle; nothing reserved, retry", 503)
        clock.sleep(SETTLE_POLL)
        waiting = {m: h for m, h in waiting.items() if _still_held(core, m, h)}
    clock.sleep(random.uniform(0, SETTLE_POLL * min(2 ** attempt, 16)))
    return set(waiting.values())


def _unsettled_holders(core, rid, contended, suspects=()):
    """Return {machine _id: holder} of `contended` machines held by requests still being made, or None.

    None: no contended machine is worth another try.

    A contended machine is worth another try when its claim is gone, or its holder is still
    being made (pending, and recently: one pending longer than SETTLE_SECONDS is taken for a
    crashed request that the sweep will undo, and counts as holding; so does one in `suspects`,
    whose claim we already waited for in vain).
    """
    holders, free = {}, False
    for machine_id in contended:
        claim = core.db[MACHINE_CLAIMS].find_one({"_id": machine_id}, {"holder": 1})
        if claim is None:
            free = True
        elif claim["holder"] != rid and claim["holder"] not in suspects and _is_unsettled(core, claim["holder"]):
            holders[machine_id] = claim["holder"]
    return holders if holders or free else None


def _still_held(core, machine_id, holder):
    claim = core.db[MACHINE_CLAIMS].find_one({"_id": machine_id}, {"holder": 1})
    return claim is not None and claim["holder"] == holder and _is_unsettled(core, holder)


def _is_unsettled(core, holder):
    res = core.db[RESERVATIONS].find_one({"_id": holder}, {"state": 1, "_created": 1, "granting_at": 1})
    if res is None or res.get("state") != "pending":
        return False
    since = res.get("granting_at") or res.get("_created")
    return since is not None and core.now() - since < datetime.timedelta(seconds=SETTLE_SECONDS)


class _Listed:
    """Candidates from a given list (the queue's grants, retries of contended machines)."""

    def __init__(self, machines):
        self._machines = list(machines)

    def next_batch(self):
        taken, self._machines = self._machines, []
        return taken

    def give_back(self, machines):
        pass


def _claim_candidates(core, res, need, contended=None, listed=None):
    """Claim up to `need` idle machines matching the reservation; return their fresh documents.

    Candidates come a batch at a time from this process's pass over the idle machines matching
    the filter (candidates.py: one query serves many reservations, in the database's own order),
    the lowest hostnames of each batch first; those not needed go back for the next reservation.
    No sort and no read of every claim: on an engine that sorts and limits in memory (FerretDB)
    that read and decoded every idle machine to hand out one. A machine held by another
    reservation fails its claim insert and is noted in `contended` (see take); one changed since
    the pass read it, or that no longer matches the filter, fails the re-read. `listed`: try these
    machines instead of the pass.
    """
    if need <= 0:
        return []
    rid, where = res["_id"], _where(res)
    if listed is not None:
        candidates = _Listed(listed)
    else:
        candidates = Candidates(core.candidates, core.db[MACHINES], dict(where, state="idle"),
                                max(CANDIDATE_BATCH, 2 * need))
    got = []
    while len(got) < need:
        chunk = sorted(candidates.next_batch(), key=lambda m: m["hostname"])
        if not chunk:
            break
        for tried, candidate in enumerate(chunk):
            if len(got) == need:
                candidates.give_back(chunk[tried:])
                break
            if not claim_machine(core, candidate, rid):
                if contended is not None:
                    contended[candidate["_id"]] = candidate
                continue
            if contended is not None:
                contended.pop(candidate["_id"], None)
            # Re-read after winning, with the filter: the machine may have changed (state, name, tags)
            # between the pass's read and our claim; a cached candidate is only a hint.
            fresh = core.db[MACHINES].find_one(dict(where, _id=candidate["_id"], state="idle"))
            if fresh is None or fresh.get("hostname") != candidate["hostname"]:
                drop_machine_claim(core, candidate["_id"], rid)
                continue
            got.append(fresh)
    return got


def roll_back(core, res, machines=None):
    """Roll back a pending reservation (machines idle, claims dropped, document deleted); return freed hostnames."""
    freed = give_back(core, res["_id"], machines)
    core.db[RESERVATIONS].delete_one({"_id": res["_id"], "state": "pending"})
    return freed


def give_back(core, rid, machines=None):
    """Give back what reservation `rid` took while pending (machines idle, claims dropped); return freed hostnames.

    `machines`: the ones it took, as far as known; None: look them up (after a crash).
    """
    db = core.db
    if machines is None:
        machines = list(db[MACHINES].find({"reservation": rid}))
        machine_ids = [c["_id"] for c in db[MACHINE_CLAIMS].find({"holder": rid}, {"_id": 1})]
    else:
        machine_ids = [m["_id"] for m in machines]
    freed = []
    for machine in machines:
        current = db[MACHINES].find_one({"_id": machine["_id"]})
        if current is not None and current.get("reservation") == rid:
            if return_machine(core, current, rid, "release", Actor(reason="reservation not completed")):
                freed.append(current["hostname"])
    for machine_id in set(machine_ids) | {m["_id"] for m in machines}:
        drop_machine_claim(core, machine_id, rid)
    return freed
