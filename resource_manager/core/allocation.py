"""Claims and reservations: the only code that grants exclusivity.

A machine or an address belongs to whoever inserted its claim document (`_id` = the
machine's `_id`, or "<kind>/<canonical address>": identities that never change, so a
rename cannot open a second claim). The insert of an existing `_id` fails atomically
(E11000) on MongoDB and FerretDB alike, so two claimants can never both win, whatever
reads they made before. Everything else here is bookkeeping around that one fact, with
each step a conditional write that is atomic on every engine (atomic.py), ordered so
that a crash at any point leaves a visible, repairable state (see sweep.py):

reserve:  insert reservation (pending) -> claims -> machines in_use (if unchanged) -> active (if still pending)
end:      mark `ending` (if active and not ending: one ender) -> machines idle -> claims deleted -> released/expired
undo:     mark `ending` (the sweep, if still pending) -> machines idle -> claims deleted -> reservation deleted
extend:   new expiry (if active, not ending, not yet expired): ordered against an ending either way
"""

import datetime
import hashlib
import json
import random
import time

from bson import ObjectId
from pymongo.errors import DuplicateKeyError

from . import history
from .candidates import Candidates
from .constraints import fingerprint
from .etag import etag
from .history import utcnow

MACHINE_CLAIMS = "machine_claims"
ADDRESS_CLAIMS = "address_claims"
RESERVATIONS = "reservations"
ENDS = "reservation_ends"  # end markers of earlier versions; the sweep finishes what they started
NOT_ENDING = {"$exists": False}
REPLAY_POLL = 0.05
CANDIDATE_BATCH = 64  # idle machines read at a time when reserving (see _claim_candidates)
SETTLE_POLL = 0.02  # s between looks at contenders we wait for (see _settle)
SETTLE_SECONDS = 30  # a contender pending for longer is taken for crashed: it counts as holding
CLAIM_WAIT = 3  # s we wait for the claims of contenders being made (milliseconds of work); then: crashed


class AllocationError(Exception):
    """A request the allocator cannot meet; `status` is the HTTP answer (503: retry after `retry_after` s)."""

    def __init__(self, message, status=409, retry_after=None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.retry_after = retry_after if retry_after is not None else (1 if status == 503 else None)

    def headers(self):
        """Return the headers of the HTTP answer."""
        return {"Retry-After": str(self.retry_after)} if self.retry_after else None


class Shortfall(AllocationError):
    """Fewer resources available than requested; nothing was taken."""

    def __init__(self, requested, available):
        super().__init__(f"requested {requested}, {available} available")
        self.requested, self.available = requested, available


def request_id(prefix, user, key):
    """Return the _id of a new reservation/allocation: derived from an Idempotency-Key if given."""
    if not key:
        return str(ObjectId())
    return prefix + hashlib.sha256(f"{user}\0{key}".encode()).hexdigest()[:32]


def claim_machine(db, machine, holder):
    """Insert the claim on `machine` (keyed by its _id); return whether we won it."""
    try:
        db[MACHINE_CLAIMS].insert_one({"_id": machine["_id"], "hostname": machine.get("hostname"),
                                       "holder": holder, "at": utcnow()})
        return True
    except DuplicateKeyError:
        return False


def drop_machine_claim(db, machine_id, holder):
    """Delete the claim on machine `machine_id`, only if `holder` holds it."""
    db[MACHINE_CLAIMS].delete_one({"_id": machine_id, "holder": holder})


def rekey_legacy_claims(db):
    """Move claims keyed by hostname (before 1.1) to the machine's _id; return how many moved."""
    moved = 0
    for claim in list(db[MACHINE_CLAIMS].find({"hostname": {"$exists": False}})):
        machine = db.machines.find_one({"hostname": claim["_id"]}, {"hostname": 1})
        if machine is not None:
            try:
                db[MACHINE_CLAIMS].insert_one({"_id": machine["_id"], "hostname": machine["hostname"],
                                               "holder": claim["holder"], "at": claim["at"]})
            except DuplicateKeyError:
                pass  # already claimed under its _id; the sweep judges which holder is real
        db[MACHINE_CLAIMS].delete_one({"_id": claim["_id"], "holder": claim["holder"]})
        moved += 1
    return moved


def address_claim_id(kind, address):
    """Return the claim _id of an address of kind public/private."""
    return f"{kind}/{address}"


def claim_address(db, kind, address, holder, doc_id, key):
    """Insert the address's claim; return whether we won it."""
    try:
        db[ADDRESS_CLAIMS].insert_one({"_id": address_claim_id(kind, address), "kind": kind, "ipkey": key,
                                       "holder": holder, "doc": doc_id, "at": utcnow()})
        return True
    except DuplicateKeyError:
        return False


def drop_address_claim(db, kind, address, **match):
    """Delete the address's claim, only if it still matches (`doc=` or `holder=`)."""
    db[ADDRESS_CLAIMS].delete_one({"_id": address_claim_id(kind, address), **match})


def stamp(before, fields, now):
    """Return the $set for `fields` on an Eve document, with a fresh _etag and _updated."""
    after = {k: v for k, v in before.items() if k != "_etag"}
    after.update(fields)
    after["_updated"] = now
    return dict(fields, _updated=now, _etag=etag(after))


def _set_machine(db, machine, fields, match, action, user, reason, job_id):
    now = utcnow()
    result = db.machines.update_one(dict(match, _id=machine["_id"]), {"$set": stamp(machine, fields, now)})
    if result.matched_count != 1:
        return False
    after = dict(machine, **fields)
    history.record(db, "machines", after, action, history.diff(machine, after), user, reason, job_id, now)
    return True


def free_machine(db, machine, rid, action, user=None, reason=None):
    """Put a machine held by reservation `rid` back to idle; return whether it was held."""
    fields = {"state": "idle", "owner": None, "job_id": None, "reservation": None}
    return _set_machine(db, machine, fields, {"reservation": rid}, action, user, reason, machine.get("job_id"))


# -- reserving ---------------------------------------------------------------

def reserve(db, req, user, key=None, grace=120, wait=10, queue=None, exclude=()):
    """Reserve req["count"] idle machines matching req["where"]; return (reservation, replayed).

    `queue`: None (answer now), or {"wait_seconds", "ahead"} to queue the request when it cannot
    be met now (the reservation comes back `queued`); "ahead": whether others already wait, so
    this one joins the line instead of trying first. `exclude`: machine _ids not to take (those
    earmarked for queued requests, see queue.py, when this request does not wait its turn).
    Raises Shortfall (nothing taken) or AllocationError (replay conflicts, slowness).
    """
    rid = request_id("res-", user, key)
    fp = fingerprint(req)
    for _attempt in range(3):
        now = utcnow()
        # `where` is kept as JSON text: its dotted keys (tags.memory) are not valid stored field names.
        doc = dict(req, where=json.dumps(req["where"] or {}), _id=rid, state="pending", user=user,
                   idempotency_key=key, fingerprint=fp,
                   hostnames=[], machine_ids=[], expires=None, _created=now, _updated=now)
        if queue:
            arrived = precise_now()
            doc.update(queued_at=arrived, wait_seconds=queue["wait_seconds"],
                       wait_until=arrived + datetime.timedelta(seconds=queue["wait_seconds"]))
        try:
            db[RESERVATIONS].insert_one(doc)
        except DuplicateKeyError:
            existing = await_settled(db[RESERVATIONS], rid, wait)
            if existing is None:
                continue  # the first request failed and was undone: make it ourselves
            if existing.get("fingerprint") != fp:
                raise AllocationError("this Idempotency-Key was used for a different request", 422) from None
            return existing, True
        if queue and queue.get("ahead"):
            return enqueue(db, doc, user), False
        try:
            return take(db, doc, grace, exclude=exclude), False
        except Shortfall:
            if queue:
                return enqueue(db, doc, user), False
            db[RESERVATIONS].delete_one({"_id": rid, "state": "pending"})
            raise
        except BaseException:
            db[RESERVATIONS].delete_one({"_id": rid, "state": "pending"})
            raise
    raise AllocationError("could not settle this Idempotency-Key; retry")


def precise_now():
    """Return the time with milliseconds (what BSON keeps): the order of arrival in the queue."""
    now = datetime.datetime.now(datetime.timezone.utc)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def enqueue(db, res, user=None):
    """Turn our pending reservation (holding nothing) into a queued one; return it.

    Raises AllocationError 503 when a sweep took it over meanwhile (nothing kept).
    """
    now = utcnow()
    result = db[RESERVATIONS].update_one({"_id": res["_id"], "state": "pending", "ending": NOT_ENDING},
                                         {"$set": {"state": "queued", "_updated": now}})
    if result.matched_count != 1:
        raise AllocationError("reservation was repaired by a sweep while being made; retry", 503)
    queued = dict(res, state="queued", _updated=now)
    history.record_reservation(db, queued, "queued", "pending", user, at=now)
    return queued


def await_settled(collection, _id, wait):
    """Wait until a pending document settles; return it, or None once it is gone."""
    deadline = time.monotonic() + wait
    while True:
        doc = collection.find_one({"_id": _id})
        if doc is None or doc.get("state") != "pending":
            return doc
        if time.monotonic() > deadline:
            # 503, not 409: the first request may yet succeed, and a client retrying with this key must retry.
            raise AllocationError(f"a request with this Idempotency-Key is still in progress ({_id}); retry later",
                                  503)
        time.sleep(REPLAY_POLL)


def take(db, res, grace, pool=None, exclude=(), settle=True):
    """Claim, then take, res["count"] machines for the pending `res`, and make it active; return it.

    `pool`: the candidates to try (default: this process's pass over the matching idle machines);
    `exclude`: machine _ids not to take. With `settle`, a shortfall caused by machines that
    contenders still being made hold is not final: we let go of everything, wait for them to
    settle, and try again (see _settle); a Shortfall means that, once they settled, fewer
    matching machines than asked were free. On any failure every claim and machine taken is
    given back; the reservation document is the caller's to delete or requeue.
    Raises Shortfall, or AllocationError 503 (too slow, or taken over by a sweep).
    """
    rid, count = res["_id"], res["count"]
    deadline = time.monotonic() + grace / 2
    claimed, taken = [], []
    contended, first = {}, list(pool) if pool is not None else None
    try:
        reclaimed, attempt, looked, suspects = False, 0, pool is not None or not settle, set()
        while len(taken) < count:
            claimed += _claim_candidates(db, res, count - len(taken) - len(claimed), exclude, contended, first)
            if first is not None and pool is None:
                first = None  # the contended machines were retried once; back to the pass
                claimed += _claim_candidates(db, res, count - len(taken) - len(claimed), exclude, contended)
            if len(taken) + len(claimed) < count and not reclaimed:
                reclaimed = True
                if reclaim_expired(db)[0]:
                    continue
            if len(taken) + len(claimed) < count and not looked:
                # The process's pass is shared: it need not have offered us every idle machine. One look
                # of our own at all of them, so that every machine a contender holds is noted.
                looked = True
                claimed += _claim_candidates(db, res, count - len(taken) - len(claimed), exclude, contended,
                                             _idle_now(db, res))
            if len(taken) + len(claimed) < count:
                waiting = _unsettled_holders(db, rid, contended, suspects) if settle else None
                if waiting is None:
                    raise Shortfall(count, len(taken) + len(claimed))
                # Contenders may be waiting for what we hold, as we wait for theirs: let go first, then
                # try again what we let go and every machine a contender held (`contended` accumulates).
                let_go(db, rid, claimed + taken)
                first = list(contended.values()) + claimed + taken
                claimed, taken = [], []
                suspects |= _settle(db, waiting, deadline, attempt)
                attempt += 1
                continue
            if time.monotonic() > deadline:
                # Past grace/2 the sweep may soon judge us crashed; give up cleanly instead.
                raise AllocationError("reservation took too long; nothing reserved, retry", 503)
            fields = {"state": "in_use", "owner": res["owner"], "job_id": res["job_id"], "reservation": rid}
            for machine in claimed:
                # Still idle in the version we read just after claiming: a write in between makes us let go.
                if _set_machine(db, machine, fields, {"_etag": machine.get("_etag"), "state": "idle"}, "reserve",
                                res["user"], res["reason"], res["job_id"]):
                    taken.append(machine)
                else:
                    drop_machine_claim(db, machine["_id"], rid)
            claimed = []
        now = utcnow()
        expires = now + datetime.timedelta(seconds=res["lease_seconds"]) if res["lease_seconds"] else None
        update = {"state": "active", "hostnames": sorted(m["hostname"] for m in taken),
                  "machine_ids": [m["_id"] for m in taken], "expires": expires, "_updated": now}
        if res.get("queued_at") is not None:
            update["granted_at"] = now
        # Only if still pending and not being undone by a sweep that judged us dead.
        result = db[RESERVATIONS].update_one({"_id": rid, "state": "pending", "ending": NOT_ENDING},
                                             {"$set": update, "$unset": {"granting_at": ""}})
        if result.matched_count != 1:
            raise AllocationError("reservation was repaired by a sweep while being made; retry", 503)
        return dict(res, **update)
    except BaseException:
        let_go(db, rid, claimed + taken)
        raise


def _idle_now(db, res):
    return list(db.machines.find(dict(json.loads(res["where"]), state="idle"), {"hostname": 1}))


def _settle(db, waiting, deadline, attempt):
    """Wait until each claim in `waiting` ({machine _id: holder}) is settled, then a little random time.

    A claim is settled once it is gone or held by someone else (its holder let go), or its holder
    is no longer being made. Waiting on claims, not on whole requests, means no cycle: a request
    that waits holds no claim, and one that holds claims is claiming (a matter of milliseconds).
    So a claim still held after CLAIM_WAIT is taken for a crashed holder's: return those holders.
    The random time keeps requests that let go together from colliding again in lockstep.
    Raises AllocationError 503 at `deadline`.
    """
    given_up = time.monotonic() + CLAIM_WAIT
    while waiting and time.monotonic() < given_up:
        if time.monotonic() >= deadline:
            # Not a 409: the contenders may yet fail and free what we need.
            raise AllocationError("contending reservations took too long to settle; nothing reserved, retry", 503)
        time.sleep(SETTLE_POLL)
        waiting = {m: h for m, h in waiting.items() if _still_held(db, m, h)}
    time.sleep(random.uniform(0, SETTLE_POLL * min(2 ** attempt, 16)))
    return set(waiting.values())


def _unsettled_holders(db, rid, contended, suspects=()):
    """Return {machine _id: holder} of `contended` machines held by requests still being made, or None.

    None: no contended machine is worth another try.

    A contended machine is worth another try when its claim is gone, or its holder is still
    being made (pending, and recently: one pending longer than SETTLE_SECONDS is taken for a
    crashed request that the sweep will undo, and counts as holding; so does one in `suspects`,
    whose claim we already waited for in vain).
    """
    holders, free = {}, False
    for machine_id in contended:
        claim = db[MACHINE_CLAIMS].find_one({"_id": machine_id}, {"holder": 1})
        if claim is None:
            free = True
        elif claim["holder"] != rid and claim["holder"] not in suspects and _is_unsettled(db, claim["holder"]):
            holders[machine_id] = claim["holder"]
    return holders if holders or free else None


def _still_held(db, machine_id, holder):
    claim = db[MACHINE_CLAIMS].find_one({"_id": machine_id}, {"holder": 1})
    return claim is not None and claim["holder"] == holder and _is_unsettled(db, holder)


def _is_unsettled(db, holder):
    res = db[RESERVATIONS].find_one({"_id": holder}, {"state": 1, "_created": 1, "granting_at": 1})
    if res is None or res.get("state") != "pending":
        return False
    since = res.get("granting_at") or res.get("_created")
    return since is not None and utcnow() - since < datetime.timedelta(seconds=SETTLE_SECONDS)


class _Listed:
    """Candidates from a given list (the queue's grants, retries of contended machines)."""

    def __init__(self, machines):
        self._machines = list(machines)

    def next_batch(self):
        taken, self._machines = self._machines, []
        return taken

    def give_back(self, machines):
        pass


def _claim_candidates(db, res, need, exclude=(), contended=None, listed=None):
    """Claim up to `need` idle machines matching the reservation; return their fresh documents.

    Candidates come a batch at a time from this process's pass over the idle machines matching
    the filter (candidates.py: one query serves many reservations, in the database's own order),
    the lowest hostnames of each batch first; those not needed go back for the next reservation.
    No sort and no read of every claim: on an engine that sorts and limits in memory (FerretDB)
    that read and decoded every idle machine to hand out one. A machine held by another
    reservation fails its claim insert and is noted in `contended` (see take); one changed since
    the pass read it fails the re-read. `listed`: try these machines instead of the pass.
    """
    if need <= 0:
        return []
    rid = res["_id"]
    if listed is not None:
        candidates = _Listed(listed)
    else:
        query = dict(json.loads(res["where"]), state="idle")
        candidates = Candidates(db.machines, query, max(CANDIDATE_BATCH, 2 * need))
    got = []
    while len(got) < need:
        chunk = sorted(candidates.next_batch(), key=lambda m: m["hostname"])
        if not chunk:
            break
        for tried, candidate in enumerate(chunk):
            if len(got) == need:
                candidates.give_back(chunk[tried:])
                break
            if candidate["_id"] in exclude:
                continue
            if not claim_machine(db, candidate, rid):
                if contended is not None:
                    contended[candidate["_id"]] = candidate
                continue
            if contended is not None:
                contended.pop(candidate["_id"], None)
            # Re-read after winning: the machine may have changed between our query and our claim.
            fresh = db.machines.find_one({"_id": candidate["_id"]})
            if fresh is None or fresh.get("state") != "idle" or fresh.get("hostname") != candidate["hostname"]:
                drop_machine_claim(db, candidate["_id"], rid)
                continue
            got.append(fresh)
    return got


def take_over_pending(db, collection, _id):
    """Mark a pending request as being undone by us (the sweep); return whether we won it."""
    result = db[collection].update_one({"_id": _id, "state": "pending", "ending": NOT_ENDING},
                                       {"$set": {"ending": "undone", "_updated": utcnow()}})
    return result.matched_count == 1


def undo(db, res, machines=None):
    """Roll back a pending reservation (machines idle, claims deleted, reservation deleted); return freed hostnames."""
    freed = let_go(db, res["_id"], machines)
    db[RESERVATIONS].delete_one({"_id": res["_id"], "state": "pending"})
    return freed


def let_go(db, rid, machines=None):
    """Give back what reservation `rid` took while pending (machines idle, claims deleted); return freed hostnames.

    `machines`: the ones it took, as far as known; None: look them up (after a crash).
    """
    if machines is None:
        machines = list(db.machines.find({"reservation": rid}))
        machine_ids = [c["_id"] for c in db[MACHINE_CLAIMS].find({"holder": rid}, {"_id": 1})]
    else:
        machine_ids = [m["_id"] for m in machines]
    freed = []
    for machine in machines:
        current = db.machines.find_one({"_id": machine["_id"]})
        if current is not None and current.get("reservation") == rid:
            if free_machine(db, current, rid, "release", None, "reservation not completed"):
                freed.append(current["hostname"])
    for machine_id in set(machine_ids) | {m["_id"] for m in machines}:
        drop_machine_claim(db, machine_id, rid)
    return freed


# -- ending ------------------------------------------------------------------

def end_reservation(db, res, why, user=None, reason=None):
    """End an active reservation (why: released/expired); return its freed hostnames.

    Returns None when it is not ours to end: another request is ending it, or (for an
    expiry) it was extended meanwhile. The conditional `ending` mark makes one ender,
    and orders every ending against every extension.
    """
    now = utcnow()
    condition = {"_id": res["_id"], "state": "active", "ending": NOT_ENDING}
    if why == "expired":
        condition["expires"] = {"$lt": now}
    result = db[RESERVATIONS].update_one(condition, {"$set": {"ending": why, "ended": now, "ended_by": user,
                                                              "_updated": now}})
    if result.matched_count != 1:
        return None
    return finish_end(db, res, why, user, reason)


def finish_end(db, res, why, user=None, reason=None):
    """Do (or redo, after a crash) the steps of ending a reservation; return freed hostnames."""
    rid = res["_id"]
    released = []
    for machine_id in res.get("machine_ids", []):
        machine = db.machines.find_one({"_id": machine_id})
        if machine is not None and machine.get("reservation") == rid:
            if free_machine(db, machine, rid, "expire" if why == "expired" else "release", user, reason):
                released.append(machine["hostname"])
        drop_machine_claim(db, machine_id, rid)
    now = utcnow()
    db[RESERVATIONS].update_one({"_id": rid, "state": "active"},
                                {"$set": {"state": why, "ending": why, "_updated": now}})
    return sorted(released)


def release(db, rid, user=None, reason=None):
    """Release reservation `rid`; return freed hostnames ([] if already ended), or None if unknown."""
    res = db[RESERVATIONS].find_one({"_id": rid})
    if res is None:
        return None
    if res["state"] == "pending":
        raise AllocationError(f"reservation {rid} is still being made; retry shortly", 503)
    if res["state"] != "active":
        return []
    return end_reservation(db, res, "released", user, reason) or []


def reclaim_expired(db, user=None):
    """End every active reservation whose lease has passed; return (count, hostnames)."""
    hostnames, count = [], 0
    for res in list(db[RESERVATIONS].find({"state": "active", "expires": {"$lt": utcnow()}})):
        freed = end_reservation(db, res, "expired", user, "lease expired")
        if freed is not None:
            count += 1
            hostnames += freed
    return count, hostnames


def extend(db, rid, lease_seconds):
    """Set the lease to end `lease_seconds` from now (never earlier); return the reservation.

    Raises AllocationError: 404 unknown, 409 not active, ending, lease-less or expired.
    """
    now = utcnow()
    expires = now + datetime.timedelta(seconds=lease_seconds)
    # $max: never earlier, even against a concurrent extension; the condition orders us against endings.
    result = db[RESERVATIONS].update_one(
        {"_id": rid, "state": "active", "ending": NOT_ENDING, "expires": {"$gt": now}},
        {"$max": {"expires": expires}, "$set": {"_updated": now}})
    res = db[RESERVATIONS].find_one({"_id": rid})
    if result.matched_count == 1:
        return res
    if res is None:
        raise AllocationError(f"no reservation {rid}", 404)
    if res["state"] != "active":
        raise AllocationError(f"reservation {rid} is {res['state']}")
    if res.get("ending"):
        raise AllocationError(f"reservation {rid} is being {res['ending']}")
    if res.get("expires") is None:
        raise AllocationError(f"reservation {rid} has no lease to extend")
    raise AllocationError(f"the lease of reservation {rid} has expired")


def explain(db, req, earmarked=frozenset()):
    """Answer a dry run: what would be reserved, and why not when too little matches.

    `earmarked`: _ids of idle machines held back for requests waiting in line (queue.earmarked).
    """
    matching = list(db.machines.find(req["where"] or {}, {"hostname": 1, "state": 1, "reservation": 1}))
    busy = {c["_id"] for c in db[MACHINE_CLAIMS].find({}, {"_id": 1})}
    expired = {r["_id"] for r in db[RESERVATIONS].find({"state": "active", "expires": {"$lt": utcnow()}},
                                                        {"_id": 1})}
    states = {}
    for m in matching:
        states[m.get("state")] = states.get(m.get("state"), 0) + 1
    unclaimed = [m for m in matching if m.get("state") == "idle" and m["_id"] not in busy]
    free = sorted(m["hostname"] for m in unclaimed if m["_id"] not in earmarked)
    held_for_line = len(unclaimed) - len(free)
    reclaimable = sorted(m["hostname"] for m in matching if m.get("reservation") in expired)
    available = free + reclaimable
    count = req["count"]
    body = {"would_reserve": available[:count] if len(available) >= count else [], "requested": count,
            "matching": len(matching), "idle": states.get("idle", 0), "available": len(available),
            "reclaimable": len(reclaimable), "earmarked": held_for_line, "states": states}
    if len(available) < count:
        body["explanation"] = (
            f"requested {count}, {len(available)} available: {len(matching)} machines match the constraints, "
            f"{states.get('idle', 0)} of them idle ({len(unclaimed)} unclaimed, {held_for_line} of those "
            f"earmarked for requests waiting in line), {len(reclaimable)} held by expired leases")
    return body
