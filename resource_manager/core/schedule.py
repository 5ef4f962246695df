"""The scheduling rule: who gets which machines now, who waits for what, and when each will run.

A pure function over plain data, no database and no clock: `plan(now, machines, holders, requests,
rules)` (queue.py reads the data, applies the plan, and stores what it says). The rule, in full:

1. **Order.** Requests are served by effective priority, highest first, then by arrival (then those
   already waiting before one being made in the same millisecond, then _id).
   A waiting request's effective priority grows by one point per `aging_seconds` waited, up to 100,
   so a request of priority p that has waited (100 - p) * aging_seconds is overtaken by nothing that
   arrives later.
2. **Refused at once.** A request asking for more machines than match its constraints in any state
   (every state can return to idle) can never be met: refused, never queued; a queued one that
   became impossible (machines deleted or retagged) ends `timed_out` with that reason. So is one
   asking for more than the per-user limit of machines. A wait that ran out ends `timed_out`.
3. **Quota.** While a request's user holds machines (active reservations, and what its requests ahead
   in line wait for) such that its grant would pass the per-user limit, it is not granted and earmarks
   nothing.
4. **Granted now** when enough matching machines are free: free and earmarked by nobody ahead, or
   earmarked by requests ahead but only from a start later than this request's lease would end
   (backfill: it gives them back in time). Machines nobody earmarked go first, lowest hostname first.
   All or nothing.
5. **Otherwise it waits, with a start.** Each matching machine comes back at a known time: now if
   free, when its holder's lease ends if held, after the windows of requests ahead that earmarked
   it. The request's start (its ETA) is when the count-th of them comes back; it earmarks those
   machines from that start for its lease. A start that cannot be known (it needs machines that
   come back by nobody's lease: needs_repair, pxe, held without an end) earmarks nothing: no request
   holds machines back on a promise nobody can date. Only the first `depth` waiting requests are
   given starts and earmarks in one plan (as Slurm's bf_max_job_test); those after wait their turn.

Backfill never delays a start already given: a request takes an earmarked machine only if it gives it
back before the earliest start it was earmarked for, so every start stays reachable.
"""

import dataclasses
import datetime
import heapq
from collections import Counter

MAX_PRIORITY = 100
NEVER = datetime.datetime.max.replace(tzinfo=datetime.timezone.utc)

# Verdicts' rules: granted now (free, backfill); waits (waits: start known; unknown: start unknown;
# quota: its user holds too much; deep: beyond the planning depth); refused (impossible, timed_out;
# short: a request that does not wait and cannot be met now).
GRANTED = ("free", "backfill")
WAITING = ("waits", "unknown", "quota", "deep")
REFUSED = ("impossible", "timed_out", "short")


@dataclasses.dataclass(frozen=True)
class Machine:
    """A machine as the rule sees it: `key` its place in hostname order (lower goes first)."""

    key: int
    free: bool  # idle and claimed by nobody: can be handed out now
    holder: str | None = None  # the active reservation holding it


@dataclasses.dataclass(frozen=True)
class Holder:
    """An active reservation: when its lease ends (None: nobody knows), whose, how many machines."""

    id: str
    ends: datetime.datetime | None
    user: str | None = None
    machines: int = 0


@dataclasses.dataclass(frozen=True)
class Request:
    """A request: waiting in line (`wait_until` set) or being made now without a wait (None)."""

    id: str
    count: int
    matches: frozenset  # keys of the machines matching its constraints, in any state
    priority: int
    arrived: datetime.datetime
    lease: float  # seconds it holds machines once granted
    user: str | None = None
    wait_until: datetime.datetime | None = None


@dataclasses.dataclass(frozen=True)
class Rules:
    """The knobs of the rule (core/context.Policy gives the service's)."""

    aging_seconds: float = 60.0
    max_machines_per_user: int = 0  # 0: no limit
    depth: int = 200  # waiting requests given a start (an ETA) per plan
    reserve_depth: int = 1  # of those, how many earmark for real (binding); 1: the head, as EASY backfilling


@dataclasses.dataclass
class Verdict:
    """What the plan says of one request."""

    rule: str
    granted: tuple = ()  # machine keys, when granted now
    start: datetime.datetime | None = None  # when it runs: now if granted, its ETA if waiting
    earmarked: tuple = ()  # machine keys held for it from its start
    holders: tuple = ()  # (reservation id, ends) of those holding what it waits for
    ahead: tuple = ()  # ids of requests ahead whose earmarks it waits behind
    reason: str | None = None
    available: int = 0  # machines it could have taken now
    priority: int = 0  # its effective priority when planned
    must_end_by: datetime.datetime | None = None  # backfilled: the earliest start it must give machines back by


@dataclasses.dataclass
class Plan:
    """The verdicts, by request id, and the order the requests were served in."""

    order: list
    verdicts: dict

    def grants(self):
        """Return [(request id, machine keys)] of the requests granted now, in order."""
        return [(rid, self.verdicts[rid].granted) for rid in self.order if self.verdicts[rid].rule in GRANTED]

    def head(self):
        """Return the id of the first request that waits with a known start, or None."""
        return next((rid for rid in self.order if self.verdicts[rid].rule == "waits"), None)


def effective_priority(request, now, rules):
    """Return the request's priority grown by its waiting time (one point per aging_seconds, at most 100)."""
    if request.wait_until is None or rules.aging_seconds <= 0 or now <= request.arrived:
        return min(request.priority, MAX_PRIORITY)
    aged = int((now - request.arrived).total_seconds() // rules.aging_seconds)
    return min(MAX_PRIORITY, request.priority + aged)


def order(requests, now, rules):
    """Return the requests in the order they are served: effective priority, then arrival, then id.

    At the same priority and the same millisecond, a request already waiting in line goes before one
    being made now.
    """
    return sorted(requests, key=lambda r: (-effective_priority(r, now, rules), r.arrived, r.wait_until is None,
                                           r.id))


def plan(now, machines, holders, requests, rules=Rules()):
    """Return the Plan for `requests` over `machines` ({key: Machine}) held by `holders` ({id: Holder})."""
    return _Planner(now, machines, holders, rules).run(order(requests, now, rules))


class _Planner:
    def __init__(self, now, machines, holders, rules):
        self.now, self.machines, self.holders, self.rules = now, machines, holders, rules
        self.open = {k for k, m in machines.items() if m.free}  # free, earmarked by nobody
        self.first_start = {}  # key -> the earliest start of a binding earmark on it
        self.tail = {}  # key -> when it comes back after the windows and grants of this plan
        self.earmarkers = {}  # key -> ids of requests that earmarked it (binding or estimated)
        self.granted = set()  # keys granted in this plan
        # Held machines by when they come back: the holder's lease end (None: unknown, left out).
        self.timeline = sorted((holders[m.holder].ends, k) for k, m in machines.items()
                               if m.holder in holders and holders[m.holder].ends is not None)
        self.by_set = {}  # id(matches) -> self.timeline filtered to it (one pass per distinct filter)
        self.user_held = Counter()
        for holder in holders.values():
            self.user_held[holder.user] += holder.machines
        self.depth = self.bound = 0

    def run(self, requests):
        verdicts = {}
        for request in requests:
            verdicts[request.id] = self.judge(request)
            verdicts[request.id].priority = effective_priority(request, self.now, self.rules)
        return Plan([r.id for r in requests], verdicts)

    def judge(self, r):
        if r.wait_until is not None and r.wait_until <= self.now:
            return Verdict("timed_out", reason="wait ran out")
        if r.count > len(r.matches):
            n = len(r.matches)
            return Verdict("impossible", reason=f"requested {r.count}, but only {n} machine"
                                                f"{'s match' if n != 1 else ' matches'} the constraints (in any "
                                                "state): it can never be met")
        limit = self.rules.max_machines_per_user
        if limit and r.count > limit:
            return Verdict("impossible", reason=f"requested {r.count} machines, more than the per-user limit of "
                                                f"{limit}: it can never be met")
        if limit and self.user_held[r.user] + r.count > limit:
            held = self.user_held[r.user]
            mine = tuple(sorted((h.id, h.ends) for h in self.holders.values() if h.user == r.user))
            return Verdict("quota", holders=mine, reason=f"{r.user} holds {held} machine{'s' if held != 1 else ''}; "
                                                         f"{r.count} more would pass the per-user limit of {limit}")
        ends = self.now + datetime.timedelta(seconds=r.lease)
        open_ok = r.matches & self.open
        # Earmarked (binding) by requests ahead, but only from a start after this lease would end: backfill.
        fits = sorted(k for k in r.matches.intersection(self.first_start)
                      if self.machines[k].free and k not in self.granted and ends <= self.first_start[k])
        available = len(open_ok) + len(fits)
        if available >= r.count:
            chosen = heapq.nsmallest(r.count, open_ok)
            backfilled = fits[:r.count - len(chosen)]
            self.grant(r, chosen, backfilled, ends)
            return Verdict("backfill" if backfilled else "free", granted=tuple(sorted(chosen + backfilled)),
                           start=self.now, available=available,
                           must_end_by=min((self.first_start[k] for k in backfilled), default=None))
        if r.wait_until is None:
            return Verdict("short", available=available,
                           ahead=self.ahead_of(r.matches), reason=f"requested {r.count}, {available} available")
        if self.depth >= self.rules.depth:
            return Verdict("deep", available=available, ahead=self.ahead_of(r.matches))
        return self.wait(r, open_ok, available)

    def grant(self, r, chosen, backfilled, ends):
        self.granted.update(chosen)
        self.granted.update(backfilled)
        for k in chosen:
            self.open.discard(k)
            self.tail[k] = ends  # back when its lease ends
        # A backfilled machine keeps its windows: it is back before the first of them starts.
        self.user_held[r.user] += r.count

    def wait(self, r, open_ok, available):
        need = r.count - len(open_ok)
        found = []
        if need > 0:
            for when, k in self.coming_back(r.matches):
                found.append((when, k))
                if len(found) == need:
                    break
        blockers = [k for _when, k in found]
        holders = tuple(sorted({(self.machines[k].holder, self.holders[self.machines[k].holder].ends)
                                for k in blockers if self.machines[k].holder in self.holders}, key=str))
        if len(found) < need:
            # Unknown start: it earmarks nothing; say what it waits for.
            stuck = {self.machines[k].holder for k in r.matches if self.machines[k].holder}
            return Verdict("unknown", available=available, ahead=self.ahead_of(r.matches),
                           holders=holders or tuple(sorted(((h, self.holders[h].ends if h in self.holders else None)
                                                            for h in stuck), key=str)))
        start = max([self.now] + [when for when, _k in found])
        ends = start + datetime.timedelta(seconds=r.lease)
        ahead = self.ahead_of(blockers)
        earmarked = sorted(open_ok) + blockers
        # The first `reserve_depth` waiting requests earmark for real (binding: nobody takes those machines
        # past their start, so their start only moves earlier); the start of those after is an estimate,
        # worked out the same way, that holds nothing back.
        binding = self.bound < self.rules.reserve_depth
        for k in earmarked:
            if binding:
                self.open.discard(k)
                self.first_start[k] = min(self.first_start.get(k, NEVER), start)
            self.earmarkers.setdefault(k, []).append(r.id)
            self.tail[k] = ends
        self.depth += 1
        self.bound += binding
        self.user_held[r.user] += r.count  # its user's later requests do not use up the quota it waits for
        return Verdict("waits", start=start, earmarked=tuple(sorted(earmarked)) if binding else (), holders=holders,
                       ahead=ahead, available=available)

    def coming_back(self, matches):
        """Yield (time, key) of the matching machines not open now, earliest first."""
        key = id(matches)
        if key not in self.by_set:
            self.by_set[key] = [(t, k) for t, k in self.timeline if k in matches]
        moved = sorted((self.tail[k], k) for k in matches.intersection(self.tail))
        for when, k in heapq.merge(self.by_set[key], moved):
            if k in self.open or (k in self.tail and self.tail[k] != when):
                continue  # a machine earmarked or granted in this plan comes back when its tail says
            yield when, k

    def ahead_of(self, keys):
        found = []
        for k in keys if len(keys) < len(self.earmarkers) else [k for k in self.earmarkers if k in keys]:
            for rid in self.earmarkers.get(k, ()):
                if rid not in found:
                    found.append(rid)
        return tuple(found)
