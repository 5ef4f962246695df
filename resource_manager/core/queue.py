"""The reservation queue in the database: the scheduling rule (schedule.py) applied to what is stored.

A request made with a wait that cannot be met at once is stored `queued` (with `queued_at`, to the
millisecond, `wait_until` and its `priority`) instead of being refused. A *granting pass* (`serve`),
one at a time across every process (the database mutex "queue": an insert, stale after
STALE_GRANTER so a killed granter blocks nobody for long), reads the line, the machines matching
it and the active reservations (`survey`), asks the rule for a plan, and applies it:

- a request the plan grants is granted with the claim protocol of every reservation (reserving.take:
  insert-unique claims decide, then machines in_use, then active): queued -> pending (conditional,
  so a cancel and a grant never both happen) -> active, its lease starting now; if a claim fails (a
  request being made took a machine), it goes back to `queued` at its place (`return_to_line`);
- a request whose wait ran out, or that can never be met any more (machines deleted or retagged),
  ends `timed_out`, the reason in its history;
- every other request gets what the plan says of it, stored only when it changed: `eta` (its
  start, or null when it cannot be known), `blocked_by` (the reservations holding what it waits
  for, with their ends, and the requests ahead whose earmarks it waits behind) and `why`.

A request that does not wait while others do is judged by the same plan, under the same mutex
(`take_now`): it gets machines only as the rule allows (free ones, or earmarked ones it gives back
before the start they are earmarked for), so what a lease frees goes to the line first.
Earmarks are not stored: each pass recomputes them, so nothing is left to repair after a crash.
Passes run after every release, cancel and machine change (the API triggers them), after a
request joins the line, and from the upkeep ticker of every server process (api/upkeep.py).
"""

import datetime
import json

from . import history, mutex, schedule
from .context import NOBODY, Actor
from .errors import AllocationError, Impossible, QuotaExceeded, Shortfall
from .pending import NOT_ENDING
from .store import MACHINES, RESERVATIONS

MUTEX = "queue"
STALE_GRANTER = datetime.timedelta(seconds=10)  # a granter holds the mutex at most PASS_BUDGET at a time
PASS_BUDGET = 3.0  # seconds of granting per pass; the next pass goes on
TAKE_WAIT = 5.0  # s a request that does not wait waits for the granter at work before 503
QUEUED = {"state": "queued"}
DEPTH = 200  # waiting requests given a start and earmarks per pass (schedule.Rules.depth)


def rules(core):
    """Return the rule's knobs from the policy."""
    policy = core.policy
    return schedule.Rules(policy.aging_seconds, policy.max_machines_per_user, DEPTH)


def _as_request(core, doc, matches=frozenset()):
    lease = doc.get("lease_seconds") or core.policy.default_lease_seconds
    waits = doc.get("queued_at") is not None and doc.get("state") != "pending"
    return schedule.Request(doc["_id"], doc["count"], matches, doc.get("priority", 50),
                            doc.get("queued_at") or doc["_created"], lease, doc.get("user"),
                            doc.get("wait_until") if waits else None)


def waiting(core):
    """Return the queued reservations in the order they are served (priority with aging, then arrival)."""
    docs = {d["_id"]: d for d in core.db[RESERVATIONS].find(QUEUED)}
    ordered = schedule.order([_as_request(core, d) for d in docs.values()], core.now(), rules(core))
    return [docs[r.id] for r in ordered]


def anyone_waiting(core):
    """Return whether any reservation is queued (an equality read, cheap on every engine)."""
    return core.db[RESERVATIONS].find_one(QUEUED, {"_id": 1}) is not None


def next_deadline(core):
    """Return the earliest `wait_until` in the line (a read of the queued requests only), or None if nobody waits."""
    docs = list(core.db[RESERVATIONS].find(QUEUED, {"wait_until": 1}))
    return min((d.get("wait_until") or core.now()) for d in docs) if docs else None


def position(queue, rid):
    """Return the 1-based place of `rid` in `queue` (from waiting()), or None."""
    for place, res in enumerate(queue, 1):
        if res["_id"] == rid:
            return place
    return None


class Survey:
    """What the rule needs, read from the database: the line, the machines matching it, their holders."""

    def __init__(self, core, extra=()):
        db = core.db
        self.core = core
        self.line = list(db[RESERVATIONS].find(QUEUED))
        docs = self.line + list(extra)
        by_filter = {}
        for doc in docs:
            key = doc["where"] if isinstance(doc["where"], str) else json.dumps(doc["where"] or {})
            if key not in by_filter:
                by_filter[key] = list(db[MACHINES].find(json.loads(key), {"hostname": 1, "state": 1,
                                                                           "reservation": 1}))
        found = {m["_id"]: m for matching in by_filter.values() for m in matching}
        ordered = sorted(found.values(), key=lambda m: (m.get("hostname") or "", str(m["_id"])))
        self.docs = ordered  # a machine's key is its place in hostname order
        key_of = {m["_id"]: k for k, m in enumerate(ordered)}
        self.holders = {}
        for res in db[RESERVATIONS].find({"state": "active"}, {"ends_at": 1, "expires": 1, "user": 1, "count": 1}):
            ends = res.get("ends_at", res.get("expires"))
            self.holders[res["_id"]] = schedule.Holder(res["_id"], ends, res.get("user"), res.get("count") or 0)
        self.machines = {}
        for k, m in enumerate(ordered):
            holder = m.get("reservation")
            free = m.get("state") == "idle" and not holder
            self.machines[k] = schedule.Machine(k, free, holder if holder in self.holders else None)
        matches = {key: frozenset(key_of[m["_id"]] for m in matching) for key, matching in by_filter.items()}
        self.requests = []
        for doc in docs:
            key = doc["where"] if isinstance(doc["where"], str) else json.dumps(doc["where"] or {})
            self.requests.append(_as_request(core, doc, matches[key]))

    def plan(self):
        """Return the rule's plan for what was read."""
        return schedule.plan(self.core.now(), self.machines, self.holders, self.requests, rules(self.core))

    def machine_docs(self, keys):
        """Return the machine documents (_id, hostname) of plan keys."""
        return [self.docs[k] for k in keys]


def serve(core, wait=0.0):
    """Run one granting pass; return {"granted", "timed_out", "waited"} or None if another granter holds it.

    `wait`: seconds to wait for the mutex (0: leave it to the granter at work). "waited": the seconds
    each granted request waited in line (for the metrics).
    """
    try:
        with mutex.holding(core, MUTEX, wait=wait, stale=STALE_GRANTER):
            return _pass(core)
    except mutex.Busy:
        return None


def _pass(core):
    outcome = {"granted": [], "timed_out": [], "waited": []}
    survey = Survey(core)
    if not survey.line:
        return outcome
    plan = survey.plan()
    line = {doc["_id"]: doc for doc in survey.line}
    budget = core.clock.monotonic() + PASS_BUDGET
    place = 0
    for rid in plan.order:
        doc, verdict = line[rid], plan.verdicts[rid]
        if verdict.rule in ("timed_out", "impossible"):
            if time_out(core, doc, verdict.reason):
                outcome["timed_out"].append(rid)
            continue
        if verdict.rule in schedule.GRANTED and core.clock.monotonic() < budget:
            granted = _grant(core, doc, survey.machine_docs(verdict.granted), verdict.must_end_by)
            if granted is not None:
                outcome["granted"].append(rid)
                outcome["waited"].append((granted["granted_at"] - doc["queued_at"]).total_seconds())
                continue
        place += 1
        _note(core, doc, verdict, survey, place)
    return outcome


def _note(core, doc, verdict, survey, place):
    """Store what the plan says of a waiting request, if it changed: eta, blocked_by, why."""
    blocked = {"reservations": [{"_id": rid, "expires": ends} for rid, ends in verdict.holders],
               "requests": list(verdict.ahead)}
    fields = {"eta": verdict.start, "blocked_by": blocked, "why": _why(verdict, doc, survey),
              "wait_rule": verdict.rule}
    if all(doc.get(k) == v for k, v in fields.items()):
        return
    core.db[RESERVATIONS].update_one({"_id": doc["_id"], "state": "queued"}, {"$set": fields})


def _why(verdict, doc, survey):
    fmt = "%Y-%m-%dT%H:%M:%SZ"
    count = doc["count"]
    if verdict.rule == "waits":
        held = ", ".join(f"{rid} (ends {ends.strftime(fmt)})" for rid, ends in verdict.holders) or "none"
        text = f"starts by {verdict.start.strftime(fmt)} when the leases it waits for end: {held}"
        if verdict.ahead:
            text += f"; after the requests ahead of it: {', '.join(verdict.ahead)}"
        return text
    if verdict.rule == "quota":
        return verdict.reason
    if verdict.rule == "deep":
        return f"more than {DEPTH} requests wait ahead of it: its start is worked out when it gets closer"
    states = {}
    keys = next(r.matches for r in survey.requests if r.id == doc["_id"])
    for k in keys:
        machine = survey.docs[k]
        states[machine.get("state")] = states.get(machine.get("state"), 0) + 1
    known = ", ".join(f"{n} {s}" for s, n in sorted(states.items(), key=lambda i: str(i[0])))
    return (f"needs {count} of the {len(keys)} matching machines ({known}); its start cannot be known until "
            f"enough of them are idle or held by a reservation with a lease")


def _grant(core, res, machines, must_end_by=None):
    from .reserving import take

    rid = res["_id"]
    now = core.now()
    result = core.db[RESERVATIONS].update_one({"_id": rid, "state": "queued"},
                                              {"$set": {"state": "pending", "granting_at": now, "_updated": now}})
    if result.matched_count != 1:
        return None  # cancelled or timed out meanwhile
    try:
        return take(core, dict(res, state="pending", granting_at=now, must_end_by=must_end_by), pool=machines,
                    settle=False, reclaim=False)
    except (Shortfall, AllocationError):
        return_to_line(core, rid)
        return None


def take_now(core, res):
    """Grant the pending request `res` (not waiting) now, as the rule allows while others wait; return it.

    Raises Impossible, QuotaExceeded, Shortfall (the rule leaves it too few machines), or
    AllocationError 503 when the granter at work holds the line for longer than TAKE_WAIT.
    """
    from .reserving import take

    try:
        with mutex.holding(core, MUTEX, wait=TAKE_WAIT, stale=STALE_GRANTER):
            survey = Survey(core, extra=[res])
            verdict = survey.plan().verdicts[res["_id"]]
            if verdict.rule in schedule.GRANTED:
                return take(core, dict(res, must_end_by=verdict.must_end_by), pool=survey.machine_docs(verdict.granted),
                            settle=False, reclaim=False)
    except mutex.Busy:
        raise AllocationError("the queue's granting pass is busy; retry", 503) from None
    if verdict.rule == "impossible":
        raise Impossible(res["count"], len(next(r.matches for r in survey.requests if r.id == res["_id"])),
                         verdict.reason)
    if verdict.rule == "quota":
        raise QuotaExceeded(verdict.reason)
    raise Shortfall(res["count"], verdict.available, "the rest are earmarked for requests waiting in line"
                    if verdict.ahead else None)


def enqueue(core, res, actor=NOBODY):
    """Turn our pending reservation (holding nothing) into a queued one; return it.

    Raises QuotaExceeded when its user already has the most requests waiting the policy allows, or
    AllocationError 503 when a sweep took it over meanwhile (nothing kept).
    """
    limit = core.policy.max_waiting_per_user
    user = res.get("user")
    try:
        with mutex.holding(core, f"waiting/{user}", wait=5.0, stale=STALE_GRANTER):
            if limit and core.db[RESERVATIONS].count_documents({"state": "queued", "user": user}) >= limit:
                raise QuotaExceeded(f"{user} has {limit} requests waiting in line already, the most allowed "
                                    f"(RM_QUEUE_MAX_WAITING_PER_USER={limit}); cancel one or wait for a grant",
                                    retry_after=30)
            now = core.now()
            result = core.db[RESERVATIONS].update_one(
                {"_id": res["_id"], "state": "pending", "ending": NOT_ENDING},
                {"$set": {"state": "queued", "_updated": now}})
    except mutex.Busy:
        raise AllocationError("too many requests of this user joining the line at once; retry", 503) from None
    if result.matched_count != 1:
        raise AllocationError("reservation was repaired by a sweep while being made; retry", 503)
    queued = dict(res, state="queued", _updated=now)
    history.record_reservation(core.db, queued, "queued", "pending", actor, at=now)
    return queued


def return_to_line(core, rid):
    """Put a reservation whose grant failed (holding nothing) back in line, at its old place."""
    core.db[RESERVATIONS].update_one({"_id": rid, "state": "pending", "ending": NOT_ENDING},
                                     {"$set": {"state": "queued", "_updated": core.now()},
                                      "$unset": {"granting_at": ""}})


def time_out(core, res, reason="wait ran out"):
    """End a queued reservation (its wait ran out, or it can never be met); return whether we did."""
    now = core.now()
    result = core.db[RESERVATIONS].update_one({"_id": res["_id"], "state": "queued"},
                                              {"$set": {"state": "timed_out", "ended": now, "end_reason": reason,
                                                        "eta": None, "_updated": now}})
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
                  "eta": None, "_updated": now}})
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


def matching_count(core, where):
    """Return how many machines match `where` in any state (every state can return to idle)."""
    return core.db[MACHINES].count_documents(where or {})
