"""Ending reservations: release, expiry (a lease or a heartbeat ran out), cancel; and keeping them alive.

    end:     mark `ending` (if active and not ending: one ender) -> machines idle -> claims dropped -> released/expired
    cancel:  queued -> cancelled (conditional: a cancel and a grant never both happen; queue.py)
    extend:  new expiry and heartbeat window (if active, not ending, not past its end), conditional on the
             values read, so it is ordered against an ending and against other extensions either way
    beat:    a new heartbeat window, the same way

Until the claims go, nobody else can take the machines, so a slow or repeated release never frees
someone else's. The steps after the mark are idempotent: whoever finds a reservation `active` and
marked `ending` may finish it (`complete_ending`): a retried DELETE does so at once, the sweep after
the grace period, so an ending cut off by a crash is finished by retrying it.

`release_or_cancel` is the one routine behind DELETE /reservations/<id> and the dashboard's Free and
Cancel; `release_job` ends every reservation of a job, including those granted while it ran.
"""

import datetime

from . import history, queue
from .claims import drop_machine_claim, return_machine
from .context import NOBODY, Actor
from .errors import AllocationError
from .pending import NOT_ENDING, await_settled
from .reserving import ENDED, heartbeat_fields
from .store import MACHINES, RESERVATIONS

LIVE = ("queued", "pending", "active")
JOB_BUDGET = 5.0  # s a release by job waits for its requests still being made, then 503 (retry)
UPDATE_TRIES = 10  # conditional writes retried on a concurrent change before 503


def begin_ending(core, res, why, actor=NOBODY):
    """Mark an active reservation `ending` (why: released/expired); return whether we are its ender.

    For an expiry only while its end (lease or heartbeat window) is still past: an extension in
    between wins.
    """
    now = core.now()
    condition = {"_id": res["_id"], "state": "active", "ending": NOT_ENDING}
    if why == "expired":
        condition["ends_at"] = {"$lt": now}
    result = core.db[RESERVATIONS].update_one(condition, {"$set": {
        "ending": why, "ended": now, "ended_by": actor.user, "end_reason": actor.reason, "_updated": now}})
    return result.matched_count == 1


def complete_ending(core, res, why=None, actor=None):
    """Do (or finish, after a crash or by a retry) the steps after the `ending` mark; return freed hostnames."""
    why = why or res.get("ending") or "released"
    actor = actor or Actor(res.get("ended_by"), res.get("end_reason"))
    rid, db = res["_id"], core.db
    released = []
    for machine_id in res.get("machine_ids", []):
        machine = db[MACHINES].find_one({"_id": machine_id})
        if machine is not None and machine.get("reservation") == rid:
            if return_machine(core, machine, rid, "expire" if why == "expired" else "release", actor):
                released.append(machine["hostname"])
        drop_machine_claim(core, machine_id, rid)
    now = core.now()
    result = db[RESERVATIONS].update_one({"_id": rid, "state": "active"},
                                         {"$set": {"state": why, "ending": why, "_updated": now}})
    if result.matched_count == 1:
        history.record_reservation(db, dict(res, state=why), why, "active", actor, at=now)
    return sorted(released)


def end(core, res, why, actor=NOBODY):
    """End an active reservation; return its freed hostnames, or None when another ender has it."""
    if not begin_ending(core, res, why, actor):
        return None
    return complete_ending(core, res, why, actor)


class Outcome:
    """What a release or cancel did: the reservation's state afterwards, the machines this call freed."""

    def __init__(self, rid, state, released=(), ended=False):
        self.rid, self.state, self.released, self.ended = rid, state, sorted(released), ended

    def body(self):
        """Return the JSON answer of DELETE /reservations/<id>."""
        return {"released": self.released, "reservations": [self.rid] if self.ended else [], "state": self.state}


def release_or_cancel(core, rid, actor=NOBODY):
    """Release reservation `rid`, or cancel it while it waits in line; return an Outcome, or None if unknown.

    A request granted while we cancel it is released instead; an ending cut off by a crash (or still
    under way) is finished here. Ended already: nothing freed, its final state.
    Raises AllocationError 503 while it is being made or granted for longer than the policy's wait.
    """
    for _attempt in range(UPDATE_TRIES):
        res = core.db[RESERVATIONS].find_one({"_id": rid})
        if res is None:
            return None
        state = res["state"]
        if state == "queued":
            if queue.cancel(core, res, actor):
                return Outcome(rid, "cancelled", ended=True)
            continue  # granted or timed out meanwhile: look again
        if state == "pending":
            await_settled(core, RESERVATIONS, rid)  # 503 if it stays pending
            continue
        if state == "active":
            if res.get("ending"):
                return Outcome(rid, res["ending"], complete_ending(core, res), ended=True)
            if begin_ending(core, res, "released", actor):
                return Outcome(rid, "released", complete_ending(core, res, "released", actor), ended=True)
            continue  # extended, or marked by another ender meanwhile: look again
        return Outcome(rid, state)
    raise AllocationError(f"reservation {rid} kept changing; retry", 503)


def release_job(core, job_id, actor=NOBODY):
    """End every live reservation of `job_id` (release the active, cancel the queued); return (freed, ids).

    Looks again until the job has nothing live left, so a request granted while we worked is
    released too. Raises AllocationError 503 when some stay pending (being made or granted) for
    longer than JOB_BUDGET: retry, and nothing of the job is left behind.
    """
    freed, ids = [], []
    deadline = core.clock.monotonic() + JOB_BUDGET
    while True:
        live = list(core.db[RESERVATIONS].find({"job_id": job_id, "state": {"$in": list(LIVE)}},
                                               {"_id": 1, "state": 1}))
        if not live:
            return sorted(freed), ids
        for res in live:
            try:
                outcome = release_or_cancel(core, res["_id"], actor)
            except AllocationError:
                outcome = None  # still pending: looked at again below
            if outcome is not None and outcome.ended:
                freed += outcome.released
                if res["_id"] not in ids:
                    ids.append(res["_id"])
        if core.clock.monotonic() > deadline:
            raise AllocationError(f"reservations of job {job_id} are still being made; retry", 503)


def expire_due(core, actor=NOBODY):
    """End every active reservation whose lease or heartbeat window has passed; return (count, hostnames)."""
    now = core.now()
    hostnames, count = [], 0
    for res in list(core.db[RESERVATIONS].find({"state": "active", "ending": NOT_ENDING, "ends_at": {"$lt": now}})):
        freed = end(core, res, "expired", actor.because(_why_expired(res, now)))
        if freed is not None:
            count += 1
            hostnames += freed
    return count, hostnames


def _why_expired(res, now):
    due, expires = res.get("heartbeat_due"), res.get("expires")
    if due is not None and due < now and (expires is None or due <= expires):
        last = res.get("heartbeat_at")
        return (f"no heartbeat for {res['heartbeat_seconds']} s (heartbeat_seconds={res['heartbeat_seconds']}; "
                f"last at {last.strftime('%Y-%m-%dT%H:%M:%S.%f')[:-3]}Z)" if last else "no heartbeat")
    return "lease expired"


def extend(core, rid, lease_seconds=None, actor=NOBODY, *, heartbeat_seconds=..., exact=False):
    """Set the lease to end `lease_seconds` from now (never earlier, unless `exact`); renew the heartbeat.

    `heartbeat_seconds`: a new heartbeat period (None: no more heartbeats); left out: unchanged.
    Returns the reservation. Raises AllocationError: 404 unknown; 409 not active, ending, or past its end.
    """
    return _renew(core, rid, actor, lease_seconds, heartbeat_seconds, exact, "extended")


def heartbeat(core, rid):
    """Renew the heartbeat window of reservation `rid`; return it.

    Queued (or being granted): nothing is due yet, answered as it stands. Raises AllocationError:
    404 unknown; 409 once it has ended (how, and why, in the message).
    """
    res = core.db[RESERVATIONS].find_one({"_id": rid})
    if res is not None and res["state"] in ("queued", "pending"):
        return res
    return _renew(core, rid, NOBODY, None, ..., False, None, res)


def _renew(core, rid, actor, lease_seconds, heartbeat_seconds, exact, action, res=None):
    policy = core.policy
    for _attempt in range(UPDATE_TRIES):
        res = res or core.db[RESERVATIONS].find_one({"_id": rid})
        now = core.now()
        _check_renewable(res, rid, now)
        expires = res.get("expires")
        if lease_seconds is not None:
            wanted = now + datetime.timedelta(seconds=lease_seconds)
            expires = wanted if exact or expires is None else max(expires, wanted)
            expires = min(expires, now + datetime.timedelta(seconds=policy.max_lease_seconds))
            if res.get("must_end_by") is not None and expires > res["must_end_by"]:
                raise AllocationError(
                    f"reservation {rid} was granted ahead of the line (backfill): its machines are earmarked for "
                    f"a request waiting in line from {res['must_end_by'].strftime('%Y-%m-%dT%H:%M:%SZ')}, so its "
                    "lease cannot end later", 409, must_end_by=res["must_end_by"].strftime("%Y-%m-%dT%H:%M:%SZ"))
        elif expires is None:
            expires = now + datetime.timedelta(seconds=policy.default_lease_seconds)
        beat = res.get("heartbeat_seconds") if heartbeat_seconds is ... else heartbeat_seconds
        fields = dict(heartbeat_fields(res, now, expires, beat or 0), expires=expires, _updated=now)
        if lease_seconds is not None:
            fields["lease_seconds"] = lease_seconds
        # Conditional on what we read: a concurrent extension or ending makes us look again.
        result = core.db[RESERVATIONS].update_one(
            {"_id": rid, "state": "active", "ending": NOT_ENDING, "ends_at": res.get("ends_at"),
             "expires": res.get("expires"), "heartbeat_at": res.get("heartbeat_at")}, {"$set": fields})
        if result.matched_count == 1:
            renewed = dict(res, **fields)
            if action:
                changes = history.diff({k: res.get(k) for k in ("expires", "heartbeat_seconds")},
                                       {k: renewed.get(k) for k in ("expires", "heartbeat_seconds")})
                history.record_reservation(core.db, renewed, action, "active", actor, at=now, changes=changes)
            return renewed
        res = None
    raise AllocationError(f"reservation {rid} kept changing; retry", 503)


def _check_renewable(res, rid, now):
    if res is None:
        raise AllocationError(f"no reservation {rid}", 404)
    if res["state"] in ENDED:
        why = f" ({res['end_reason']})" if res.get("end_reason") else ""
        raise AllocationError(f"reservation {rid} has ended: {res['state']}{why}", 409, state=res["state"])
    if res["state"] != "active":
        raise AllocationError(f"reservation {rid} is {res['state']}", 409, state=res["state"])
    if res.get("ending"):
        raise AllocationError(f"reservation {rid} is being {res['ending']}", 409, state=res["ending"])
    ends_at = res.get("ends_at", res.get("expires"))
    if ends_at is not None and ends_at < now:
        raise AllocationError(f"the lease of reservation {rid} has run out ({_why_expired(res, now)})", 409,
                              state="expired")


def give_default_leases(core):
    """Give active reservations stored without an end by earlier versions one (the default lease from now).

    Also fills `ends_at` (the earlier of lease and heartbeat window) where an earlier version did not
    store it. Returns how many changed.
    """
    changed = 0
    query = {"state": "active", "ending": NOT_ENDING, "$or": [{"expires": None}, {"ends_at": {"$exists": False}}]}
    for res in list(core.db[RESERVATIONS].find(query)):
        now = core.now()
        expires = res.get("expires")
        if expires is None:
            expires = now + datetime.timedelta(seconds=core.policy.default_lease_seconds)
        fields = dict(heartbeat_fields(res, res.get("heartbeat_at") or now, expires), expires=expires, _updated=now)
        if not res.get("heartbeat_seconds"):
            fields["ends_at"] = expires
        result = core.db[RESERVATIONS].update_one(
            {"_id": res["_id"], "state": "active", "ending": NOT_ENDING, "expires": res.get("expires")},
            {"$set": fields})
        if result.matched_count == 1 and res.get("expires") is None:
            changed += 1
            history.record_reservation(
                core.db, dict(res, **fields), "extended", "active",
                Actor(reason=f"given the default lease of {core.policy.default_lease_seconds} s: stored without "
                             "an expiry by an earlier version"), at=now,
                changes={"expires": {"before": None, "after": expires}})
        elif result.matched_count == 1:
            changed += 1
    return changed
