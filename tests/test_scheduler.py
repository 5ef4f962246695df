"""The scheduler over real HTTP: nothing impossible waits, backfill by lease ends, priorities, quotas, why and when.

Each test here failed on the main before the scheduler (issue 20), except where it says so.
"""

import datetime

import pytest

from resource_manager.core import check

from .support import ADMIN, LiveServer, run_together

DATE = "%Y-%m-%dT%H:%M:%SZ"


def add_machines(session, *hostnames, state="idle", **fields):
    docs = [dict({"hostname": h, "state": state}, **fields) for h in hostnames]
    response = session.post("/machines", json=docs if len(docs) > 1 else docs[0])
    assert response.status_code == 201, response.text


def post(session, expect, **body):
    response = session.post("/reservations", json=body)
    assert response.status_code == expect, response.text
    return response.json()


def state(anon, rid):
    return anon.get(f"/reservations/{rid}").json()["state"]


def test_an_impossible_request_is_refused_and_never_freezes_the_lab(operator, anon, server):
    add_machines(operator, *[f"m{i}" for i in range(5)])
    add_machines(operator, "broken", state="needs_repair")
    refused = post(operator, 409, count=661, wait_seconds=9440)
    assert refused["_error"]["message"] == ("requested 661, but only 6 machines match the constraints (in any "
                                            "state): it can never be met")
    assert server.db.reservations.count_documents({}) == 0
    # The lab is not frozen: a plain reservation of a named machine made a second ago is granted.
    add_machines(operator, "fresh")
    assert post(operator, 201, count=1, where={"hostname": "fresh"})["hostnames"] == ["fresh"]
    # Counting every state: six could be met one day (needs_repair comes back), so it waits.
    assert post(operator, 202, count=6, wait_seconds=600)["state"] == "queued"


def test_a_queued_request_that_becomes_impossible_ends_timed_out_saying_why(operator, anon, server):
    add_machines(operator, "a1", "a2", tags={"rack": "a"})
    held = post(operator, 201, count=1, where={"hostname": "a1"})
    waiting = post(operator, 202, count=2, where={"tags.rack": "a"}, wait_seconds=600)
    # a2 is retagged: only one machine of rack a is left, so two can never be met any more.
    assert operator.write("PATCH", "/machines/a2", json={"tags": {"rack": "b"}}).status_code == 200
    after = anon.get(f"/reservations/{waiting['_id']}").json()
    assert after["state"] == "timed_out" and "only 1 machine matches" in after["end_reason"]
    events = anon.get(f"/reservations/{waiting['_id']}/history").json()["_items"]
    assert [e["action"] for e in events] == ["queued", "timed_out"] and "never be met" in events[-1]["reason"]
    assert state(anon, held["_id"]) == "active"


def test_a_grant_rechecks_the_constraints_after_a_retag(operator, anon, server):
    add_machines(operator, "t1", "t2", tags={"rack": "a"})
    assert post(operator, 201, count=1, where={"tags.rack": "a"})["hostnames"] == ["t1"]
    # t2 was read by the same pass (kept for the next reservation), then retagged.
    assert operator.write("PATCH", "/machines/t2", json={"tags": {"rack": "b"}}).status_code == 200
    body = post(operator, 409, count=1, where={"tags.rack": "a"})
    assert body["_error"]["message"] == "requested 1, 0 available"
    assert anon.get("/machines/t2").json()["state"] == "idle"


def test_an_idempotency_key_of_an_ended_reservation_is_never_answered_with_it(operator, anon, server):
    add_machines(operator, "m1")
    key = {"Idempotency-Key": "build-7-hosts"}
    first = operator.post("/reservations", json={"count": 1, "job_id": "build-7"}, headers=key)
    assert first.status_code == 201
    assert operator.delete(f"/reservations/{first.json()['_id']}").status_code == 200
    post(operator, 201, count=1, job_id="someone-else")  # m1 goes to another job
    replay = operator.post("/reservations", json={"count": 1, "job_id": "build-7"}, headers=key)
    assert replay.status_code == 409
    error = replay.json()["_error"]
    assert (error["reservation"], error["state"]) == (first.json()["_id"], "released")
    assert "has ended (released)" in error["message"] and "use a new key" in error["message"]


def test_a_request_that_does_not_wait_leaves_what_an_expired_lease_frees_to_the_line(operator, anon, clock):
    add_machines(operator, "m1")
    held = post(operator, 201, count=1, lease_seconds=60)
    head = post(operator, 202, count=1, wait_seconds=3600)
    clock.advance(61)  # the lease ran out; no tick has ended it yet
    assert post(operator, 409, count=1, lease_seconds=60)["_error"]["message"] == (
        "requested 1, 0 available: the rest are earmarked for requests waiting in line")
    assert state(anon, held["_id"]) == "active"
    swept = operator.post("/reservations/sweep").json()
    assert swept["expired"] == 1 and swept["queue"] == {"granted": [head["_id"]], "timed_out": []}


def test_a_wait_that_ran_out_earmarks_nothing(operator, anon, clock):
    add_machines(operator, "m1", "m2")
    post(operator, 201, count=1, where={"hostname": "m1"}, lease_seconds=3600)
    waiting = post(operator, 202, count=2, wait_seconds=60)
    assert post(operator, 409, count=1, lease_seconds=7200)["_error"]["message"].startswith("requested 1, 0")
    clock.advance(61)
    assert post(operator, 201, count=1, lease_seconds=7200)["hostnames"] == ["m2"]
    operator.post("/reservations/sweep")
    assert state(anon, waiting["_id"]) == "timed_out"


@pytest.mark.own_server
def test_waits_and_leases_end_on_a_quiet_server(server, operator, anon):
    # The real clock and the real upkeep ticker (every server process runs one): no request after these.
    add_machines(operator, "m1", "m2")
    leased = post(operator, 201, count=1, lease_seconds=1)
    beating = post(operator, 201, count=1, lease_seconds=3600, heartbeat_seconds=5)
    waiting = post(operator, 202, count=2, wait_seconds=1, lease_seconds=60)
    upkeep = server.app.extensions["rm_upkeep"]
    db = server.db
    deadline = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=15)
    seen = upkeep.ticks
    while datetime.datetime.now(datetime.timezone.utc) < deadline:
        states = {r["_id"]: r["state"] for r in db.reservations.find()}
        if (states[leased["_id"]], states[waiting["_id"]], states[beating["_id"]]) == ("expired", "timed_out",
                                                                                       "expired"):
            break
        seen = _next_tick(upkeep, seen)
    ended = {r["_id"]: r for r in db.reservations.find()}
    assert ended[leased["_id"]]["end_reason"] == "lease expired"
    assert ended[waiting["_id"]]["end_reason"] == "wait ran out"
    assert ended[beating["_id"]]["end_reason"].startswith("no heartbeat for 5 s")
    # Within its heartbeat period plus a tick or two of the last beat (the grant).
    late = ended[beating["_id"]]["ended"] - ended[beating["_id"]]["granted_at"]
    assert datetime.timedelta(seconds=5) <= late <= datetime.timedelta(seconds=8)
    assert check.check(db) == []


def _next_tick(upkeep, seen):
    # Wait for the ticker's next pass (it counts them), not for a guessed time.
    import time

    while upkeep.ticks == seen:
        time.sleep(0.02)
    return upkeep.ticks


def test_ending_a_job_also_ends_its_request_granted_meanwhile(operator, anon, server):
    add_machines(operator, "j1", "k1")
    for round_ in range(12):
        job, other = f"J{round_}", f"K{round_}"
        active = post(operator, 201, count=1, where={"hostname": "j1"}, job_id=job)
        blocker = post(operator, 201, count=1, where={"hostname": "k1"}, job_id=other)
        queued = post(operator, 202, count=1, where={"hostname": "k1"}, job_id=job, wait_seconds=600)

        def act(i, blocker=blocker, job=job):
            if i == 0:  # the release hands k1 to the job's queued request
                return operator.delete(f"/reservations/{blocker['_id']}").status_code
            return operator.delete("/reservations", params={"job_id": job}).status_code

        assert run_together(2, act) == [200, 200]
        live = list(server.db.reservations.find({"job_id": job, "state": {"$in": ["queued", "pending", "active"]}}))
        assert live == [], (round_, live)
        assert {state(anon, active["_id"]), state(anon, queued["_id"])} <= {"released", "cancelled"}
        assert server.db.machines.count_documents({"state": "in_use"}) == 0
        assert check.check(server.db) == []


def test_a_delete_of_a_queued_request_never_answers_active(operator, anon, server):
    add_machines(operator, "m1")
    seen = set()
    for _round in range(12):
        held = post(operator, 201, count=1)
        waiting = post(operator, 202, count=1, wait_seconds=600)

        def act(i, held=held, waiting=waiting):
            path = f"/reservations/{(held if i == 0 else waiting)['_id']}"
            response = operator.delete(path)
            return response.status_code, response.json()

        (_, _), (code, body) = run_together(2, act)
        assert code == 200 and body["state"] in ("cancelled", "released") and body["reservations"] == [waiting["_id"]]
        seen.add(body["state"])
        assert state(anon, waiting["_id"]) == body["state"]
        assert anon.get("/machines/m1").json()["state"] == "idle"
        assert check.check(server.db) == []
    assert seen  # cancelled when the DELETE came first, released when the grant did


def test_priority_orders_the_line_and_its_limits_are_by_role(operator, server):
    admin = server.session(ADMIN)
    add_machines(operator, "m1")
    post(operator, 201, count=1)
    refused = post(operator, 403, count=1, wait_seconds=600, priority=60)
    assert refused["_error"]["message"] == ("priority 60 is above 50, the most a operator may ask for (an admin "
                                            "may ask for any)")
    low = post(admin, 202, count=1, wait_seconds=600, priority=10)
    normal = post(operator, 202, count=1, wait_seconds=600)
    urgent = post(admin, 202, count=1, wait_seconds=600, priority=90)
    line = operator.get("/reservations", params={"state": "queued"}).json()["_items"]
    assert [(r["_id"], r["position"], r["priority"]) for r in line] == [
        (urgent["_id"], 1, 90), (normal["_id"], 2, 50), (low["_id"], 3, 10)]
    for bad in (-1, 101, "high", 1.5):
        assert "priority" in post(admin, 422, count=1, priority=bad)["_issues"]


def test_a_short_lease_backfills_what_the_head_waits_for_and_may_not_outstay_it(operator, anon, clock):
    add_machines(operator, "m1", "m2")
    held = post(operator, 201, count=1, where={"hostname": "m1"}, lease_seconds=3600)
    head = post(operator, 202, count=2, wait_seconds=7200)
    assert anon.get(f"/reservations/{head['_id']}").json()["eta"] == held["expires"]
    dry = operator.post("/reservations?dry_run=1", json={"count": 1, "lease_seconds": 1800}).json()
    assert (dry["rule"], dry["would_reserve"]) == ("backfill", ["m2"])
    assert operator.post("/reservations?dry_run=1", json={"count": 1, "lease_seconds": 5400}).json()["rule"] == "short"
    short = post(operator, 201, count=1, lease_seconds=1800)
    assert short["hostnames"] == ["m2"]
    # Its lease may not run past the head's start: that would delay the head.
    late = operator.post(f"/reservations/{short['_id']}/extend", json={"lease_seconds": 5400})
    assert late.status_code == 409 and "granted ahead of the line (backfill)" in late.json()["_error"]["message"]
    assert operator.post(f"/reservations/{short['_id']}/extend", json={"lease_seconds": 3000}).status_code == 200
    # The head's start did not move.
    assert anon.get(f"/reservations/{head['_id']}").json()["eta"] == held["expires"]
    clock.advance(3601)
    operator.post("/reservations/sweep")
    assert state(anon, head["_id"]) == "active" and state(anon, short["_id"]) == "expired"


@pytest.fixture
def quota_server(localdb, users_file, dbname):
    live = LiveServer({"MONGO_URI": localdb.uri, "MONGO_DBNAME": dbname, "USERS_FILE": users_file,
                       "QUEUE_MAX_WAITING_PER_USER": 2, "QUEUE_MAX_MACHINES_PER_USER": 2, "QUEUE_TICK_SECONDS": 0})
    yield live
    live.stop()


def test_quotas_bound_what_one_user_waits_for_and_holds(quota_server):
    from .support import OPERATOR

    operator, admin = quota_server.session(OPERATOR), quota_server.session(ADMIN)
    add_machines(admin, *[f"m{i}" for i in range(5)])
    first = post(operator, 201, count=2)
    over = post(operator, 429, count=1)
    assert over["_error"]["message"] == ("operator holds machines such that 1 more would pass the per-user limit of "
                                         "2 (RM_QUEUE_MAX_MACHINES_PER_USER)")
    assert "more than the per-user limit of 2" in post(operator, 409, count=3, wait_seconds=60)["_error"]["message"]
    # Waiting: it waits for its user's own reservations to end, and earmarks nothing meanwhile.
    waits = [post(operator, 202, count=1, wait_seconds=600) for _ in range(2)]
    assert "operator holds 2 machines" in waits[0]["why"]
    assert post(admin, 201, count=2)["hostnames"] == ["m2", "m3"]
    refused = operator.post("/reservations", json={"count": 1, "wait_seconds": 600})
    assert refused.status_code == 429 and refused.headers["Retry-After"] == "30"
    assert refused.json()["_error"]["message"].startswith("operator has 2 requests waiting in line already")
    assert operator.delete(f"/reservations/{first['_id']}").status_code == 200
    assert [state(operator, w["_id"]) for w in waits] == ["active", "active"]


def test_metrics_count_queue_waits(operator, anon, server):
    add_machines(operator, "m1")
    held = post(operator, 201, count=1)
    post(operator, 202, count=1, wait_seconds=600)
    assert operator.delete(f"/reservations/{held['_id']}").status_code == 200
    text = anon.get("/metrics").text
    assert "# TYPE rm_queue_wait_seconds histogram" in text
    counts = [line for line in text.splitlines() if line.startswith("rm_queue_wait_seconds_count")]
    assert counts and float(counts[0].split()[-1]) >= 1
