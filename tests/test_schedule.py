"""The scheduling rule (core/schedule.py) as plain data: examples, then properties over random labs (hypothesis)."""

import datetime

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resource_manager.core.schedule import GRANTED, Holder, Machine, Request, Rules, plan

NOW = datetime.datetime(2030, 1, 1, 12, 0, tzinfo=datetime.timezone.utc)
FAR = NOW + datetime.timedelta(days=1)
NO_AGING = Rules(aging_seconds=0)


def minutes(n):
    return NOW + datetime.timedelta(minutes=n)


def lab(free=(), held=None, down=()):
    """Machines by key: free ones, held ones ({key: holder id}), and ones down (needs_repair, pxe)."""
    machines = {k: Machine(k, True) for k in free}
    machines.update({k: Machine(k, False, holder) for k, holder in (held or {}).items()})
    machines.update({k: Machine(k, False) for k in down})
    return machines


def request(rid, count, matches, priority=50, arrived=0, lease=3600, user="u", wait=True):
    return Request(rid, count, frozenset(matches), priority, minutes(arrived), lease, user, FAR if wait else None)


def test_a_request_that_fits_is_granted_the_lowest_free_machines():
    p = plan(NOW, lab(free=[0, 1, 2, 3]), {}, [request("r", 2, [3, 1, 2])], NO_AGING)
    assert p.verdicts["r"].rule == "free" and p.verdicts["r"].granted == (1, 2)


def test_more_than_ever_matches_is_refused_at_once_whatever_the_states():
    machines = lab(free=[0], held={1: "h"}, down=[2])
    p = plan(NOW, machines, {"h": Holder("h", minutes(30), "x", 1)},
             [request("big", 4, [0, 1, 2]), request("fits", 3, [0, 1, 2])], NO_AGING)
    assert p.verdicts["big"].rule == "impossible"
    assert "only 3 machines match" in p.verdicts["big"].reason
    assert p.verdicts["fits"].rule == "unknown"  # it needs the machine that is down: nobody can say when


def test_the_head_gets_a_start_from_the_leases_that_hold_what_it_needs():
    machines = lab(free=[0], held={1: "a", 2: "b"})
    holders = {"a": Holder("a", minutes(30), "x", 1), "b": Holder("b", minutes(90), "x", 1)}
    p = plan(NOW, machines, holders, [request("head", 2, [0, 1, 2])], NO_AGING)
    v = p.verdicts["head"]
    assert v.rule == "waits" and v.start == minutes(30) and v.earmarked == (0, 1)
    assert v.holders == (("a", minutes(30)),)


def test_a_short_request_backfills_an_earmarked_machine_only_if_it_gives_it_back_before_the_start():
    machines = lab(free=[0], held={1: "a"})
    holders = {"a": Holder("a", minutes(30), "x", 1)}
    line = [request("head", 2, [0, 1], arrived=0), request("short", 1, [0], arrived=1, lease=20 * 60),
            request("long", 1, [0], arrived=2, lease=40 * 60)]
    p = plan(NOW, machines, holders, line, NO_AGING)
    assert p.verdicts["head"].start == minutes(30)
    assert p.verdicts["short"].rule == "backfill" and p.verdicts["short"].granted == (0,)
    assert p.verdicts["long"].rule == "waits" and p.verdicts["long"].ahead == ("head",)
    # A request that does not wait is refused rather than take what the head waits for.
    p = plan(NOW, machines, holders, [line[0], request("now", 1, [0], arrived=3, lease=40 * 60, wait=False)],
             NO_AGING)
    assert p.verdicts["now"].rule == "short" and p.verdicts["now"].available == 0


def test_priority_orders_the_line_and_aging_lifts_the_low():
    machines = lab(free=[0])
    line = [request("low", 1, [0], priority=10, arrived=-30), request("high", 1, [0], priority=60, arrived=0)]
    assert plan(NOW, machines, {}, line, NO_AGING).verdicts["high"].rule == "free"
    # Waiting 30 minutes at one point a minute: 10 + 30 = 40, still below 60.
    assert plan(NOW, machines, {}, line, Rules(aging_seconds=60)).verdicts["high"].rule == "free"
    # At one point every 20 s: 10 + 90 = 100 > 60: the old request goes first.
    assert plan(NOW, machines, {}, line, Rules(aging_seconds=20)).verdicts["low"].rule == "free"


def test_quota_holds_a_user_back_without_earmarking():
    machines = lab(free=[0, 1], held={2: "mine"})
    holders = {"mine": Holder("mine", minutes(10), "alice", 1)}
    rules = Rules(aging_seconds=0, max_machines_per_user=2)
    line = [request("more", 2, [0, 1], user="alice"), request("other", 2, [0, 1], user="bob")]
    p = plan(NOW, machines, holders, line, rules)
    assert p.verdicts["more"].rule == "quota" and "holds 1 machine" in p.verdicts["more"].reason
    assert p.verdicts["other"].rule == "free"
    assert plan(NOW, machines, holders, [request("huge", 3, [0, 1, 2], user="bob")], rules
                ).verdicts["huge"].rule == "impossible"


def test_a_wait_that_ran_out_is_timed_out_and_holds_nothing():
    gone = Request("gone", 1, frozenset([0]), 50, minutes(-10), 60, "u", minutes(-1))
    p = plan(NOW, lab(free=[0]), {}, [gone, request("next", 1, [0], arrived=0)], NO_AGING)
    assert p.verdicts["gone"].rule == "timed_out" and p.verdicts["next"].rule == "free"


# -- properties over random labs ------------------------------------------------------------------------

@st.composite
def labs(draw, max_machines=6, max_requests=8, waiting_only=False):
    n = draw(st.integers(1, max_machines))
    machines, holders = {}, {}
    for k in range(n):
        kind = draw(st.sampled_from(["free", "free", "held", "down"]))
        if kind == "held":
            hid = f"h{k}"
            ends = draw(st.one_of(st.none(), st.integers(1, 600).map(minutes)))
            holders[hid] = Holder(hid, ends, draw(st.sampled_from("abc")), 1)
            machines[k] = Machine(k, False, hid)
        else:
            machines[k] = Machine(k, kind == "free")
    requests = []
    for i in range(draw(st.integers(0, max_requests))):
        matches = draw(st.frozensets(st.integers(0, n - 1), min_size=1))
        waits = waiting_only or draw(st.booleans()) or i < 3
        wait_until = draw(st.sampled_from([FAR, FAR, minutes(-1)])) if waits else None
        count = draw(st.one_of(st.integers(1, 2), st.integers(1, n + 1)))
        requests.append(Request(f"r{i}", count, matches, draw(st.sampled_from([0, 50, 50, 100])),
                                minutes(-draw(st.integers(0, 120))), draw(st.integers(60, 4 * 3600)),
                                draw(st.sampled_from("abc")), wait_until))
    return machines, holders, requests


RULES = st.builds(Rules, aging_seconds=st.sampled_from([0, 60, 600]),
                  max_machines_per_user=st.sampled_from([0, 0, 3]), depth=st.sampled_from([200, 2]))
PROPERTIES = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTIES
@given(labs(), RULES)
def test_nothing_is_granted_twice_and_grants_are_all_or_nothing_of_free_matching_machines(drawn, rules):
    machines, holders, requests = drawn
    p = plan(NOW, machines, holders, requests, rules)
    given_out = []
    by_id = {r.id: r for r in requests}
    for rid, keys in p.grants():
        r = by_id[rid]
        assert len(keys) == r.count
        assert set(keys) <= r.matches
        assert all(machines[k].free for k in keys)
        given_out += keys
    assert len(given_out) == len(set(given_out))


@PROPERTIES
@given(labs(), RULES)
def test_impossible_requests_are_refused(drawn, rules):
    machines, holders, requests = drawn
    p = plan(NOW, machines, holders, requests, rules)
    for r in requests:
        if r.count > len(r.matches) and (r.wait_until is None or r.wait_until > NOW):
            assert p.verdicts[r.id].rule == "impossible"
        if p.verdicts[r.id].rule == "impossible":
            assert r.count > len(r.matches) or (rules.max_machines_per_user and r.count > rules.max_machines_per_user)


@PROPERTIES
@given(labs(), RULES)
def test_nobody_takes_an_earmarked_machine_past_the_start_it_is_earmarked_for(drawn, rules):
    # FIFO within a priority, and priorities across: a request served later takes a machine that one
    # served before it earmarked only if its own lease ends by that one's start (backfill).
    machines, holders, requests = drawn
    p = plan(NOW, machines, holders, requests, rules)
    by_id = {r.id: r for r in requests}
    for i, earlier in enumerate(p.order):
        v = p.verdicts[earlier]
        if v.rule != "waits":
            continue
        for later in p.order[i + 1:]:
            w = p.verdicts[later]
            if set(w.granted) & set(v.earmarked):
                assert NOW + datetime.timedelta(seconds=by_id[later].lease) <= v.start


@PROPERTIES
@given(labs(), RULES)
def test_within_a_priority_requests_are_served_in_order_of_arrival(drawn, rules):
    machines, holders, requests = drawn
    rules = Rules(aging_seconds=0, max_machines_per_user=rules.max_machines_per_user, depth=rules.depth)
    p = plan(NOW, machines, holders, requests, rules)
    by_id = {r.id: r for r in requests}
    for i, first in enumerate(p.order):
        for second in p.order[i + 1:]:
            a, b = by_id[first], by_id[second]
            if a.priority == b.priority:
                assert (a.arrived, a.wait_until is None, a.id) <= (b.arrived, b.wait_until is None, b.id)


def _apply(plan_, machines, holders, requests):
    """The lab after the plan's grants: granted machines held until their lease ends, grantees gone."""
    machines, holders = dict(machines), dict(holders)
    by_id = {r.id: r for r in requests}
    for rid, keys in plan_.grants():
        r = by_id[rid]
        holders[rid] = Holder(rid, NOW + datetime.timedelta(seconds=r.lease), r.user, r.count)
        for k in keys:
            machines[k] = Machine(k, False, rid)
    return machines, holders, [r for r in requests if r.id not in dict(plan_.grants())]


@PROPERTIES
@given(labs(waiting_only=True), RULES)
def test_backfill_never_delays_a_start_already_given(drawn, rules):
    # A start given with binding earmarks (the head of the line, reserve_depth of them) never moves later
    # because of what the plan grants meanwhile. The starts behind them are estimates (EASY backfilling):
    # a backfilled request may still take a machine one of them counted on, so they are not held to it.
    machines, holders, requests = drawn
    first = plan(NOW, machines, holders, requests, rules)
    after = plan(NOW, *_apply(first, machines, holders, requests), rules)
    for rid, v in first.verdicts.items():
        if v.rule == "waits" and v.earmarked and rid in after.verdicts:
            w = after.verdicts[rid]
            assert w.rule in GRANTED or (w.rule == "waits" and w.start <= v.start), (rid, v, w)


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 5), st.lists(st.tuples(st.integers(0, 600), st.integers(1, 5), st.integers(10, 300),
                                             st.sampled_from([0, 30, 50, 100])), min_size=1, max_size=25),
       st.sampled_from([30, 120]))
def test_waits_are_bounded_under_random_arrivals(n, arrivals, aging):
    # Every machine matches every request; time runs from event to event (arrivals, lease ends).
    # Bound: a request of priority p outranks every later arrival after (100 - p) * aging seconds; from
    # then on only those already ahead of it can go first, each for at most its lease.
    rules = Rules(aging_seconds=aging)
    all_keys = frozenset(range(n))
    reqs = [Request(f"r{i:02d}", min(c, n), all_keys, p, NOW + datetime.timedelta(seconds=t), lease, "u", FAR)
            for i, (t, c, lease, p) in enumerate(arrivals)]
    machines = {k: Machine(k, True) for k in range(n)}
    holders, granted_at, now = {}, {}, NOW
    pending = sorted(reqs, key=lambda r: r.arrived)
    for _step in range(10 * len(reqs) + 10):
        arrived = [r for r in pending if r.arrived <= now]
        p = plan(now, machines, holders, arrived, rules)
        for rid, keys in p.grants():
            r = next(x for x in arrived if x.id == rid)
            granted_at[rid] = now
            holders[rid] = Holder(rid, now + datetime.timedelta(seconds=r.lease), "u", r.count)
            for k in keys:
                machines[k] = Machine(k, False, rid)
            pending.remove(r)
        if not pending:
            break
        events = [r.arrived for r in pending if r.arrived > now] + [h.ends for h in holders.values()]
        now = min(events)
        for hid, h in list(holders.items()):
            if h.ends <= now:
                del holders[hid]
                for k, m in machines.items():
                    if m.holder == hid:
                        machines[k] = Machine(k, True)
    assert not pending, "every request is granted in the end"
    total_lease = sum(r.lease for r in reqs)
    for r in reqs:
        waited = (granted_at[r.id] - r.arrived).total_seconds()
        assert waited <= (100 - r.priority) * aging + total_lease
