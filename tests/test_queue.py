"""The reservation queue over real HTTP: 202 and a place in line, grants in order, long-poll, cancel, expiry.

The ticker is off here (QUEUE_TICK_SECONDS=0): every grant comes from a deterministic trigger
(a release, a cancel, a machine made idle, or the sweep), so nothing waits on a clock.
"""

import datetime
import time

import pytest

from resource_manager.core import check, counts

DATE = "%Y-%m-%dT%H:%M:%SZ"
EARMARKED = "requested 1, 0 available: the rest are earmarked for requests waiting in line"


@pytest.fixture
def overrides(overrides):
    return dict(overrides, QUEUE_TICK_SECONDS=0, QUEUE_MAX_WAIT_SECONDS=3600)


def add_machines(session, *hostnames, state="idle", **fields):
    docs = [dict({"hostname": h, "state": state}, **fields) for h in hostnames]
    response = session.post("/machines", json=docs if len(docs) > 1 else docs[0])
    assert response.status_code == 201, response.text


def post(session, expect, **body):
    response = session.post("/reservations", json=body)
    assert response.status_code == expect, response.text
    return response


def release(session, rid):
    response = session.delete(f"/reservations/{rid}")
    assert response.status_code == 200, response.text
    return response.json()


def state(anon, rid):
    return anon.get(f"/reservations/{rid}").json()["state"]


def test_a_request_that_waits_is_queued_with_its_place_and_granted_on_release(operator, anon, server):
    add_machines(operator, "m1", "m2", "m3")
    first = post(operator, 201, count=2, wait_seconds=600).json()
    assert first["state"] == "active" and "position" not in first
    queued = post(operator, 202, count=2, owner="ci", lease_seconds=60, wait_seconds=600)
    body = queued.json()
    assert queued.headers["Location"].endswith(f"/reservations/{body['_id']}")
    assert body["_links"] == {"self": {"href": f"/reservations/{body['_id']}"}}
    assert (body["state"], body["position"], body["hostnames"], body["expires"]) == ("queued", 1, [], None)
    queued_at = datetime.datetime.strptime(body["queued_at"], DATE)
    wait_until = datetime.datetime.strptime(body["wait_until"], DATE)
    assert datetime.timedelta(seconds=599) <= wait_until - queued_at <= datetime.timedelta(seconds=601)
    second = post(operator, 202, count=1, wait_seconds=600).json()
    assert second["position"] == 2
    # m3 is free, but earmarked for the request ahead: neither the one behind nor a request that
    # does not wait may take it.
    assert post(operator, 409, count=1).json()["_error"]["message"] == EARMARKED
    listing = anon.get("/reservations?state=queued").json()["_items"]
    assert [(r["_id"], r["position"]) for r in listing] == [(body["_id"], 1), (second["_id"], 2)]
    # The release hands the machines to the head of the line before it answers.
    release(operator, first["_id"])
    granted = anon.get(f"/reservations/{body['_id']}").json()
    assert granted["state"] == "active" and len(granted["hostnames"]) == 2
    # The lease starts at the grant.
    expires = datetime.datetime.strptime(granted["expires"], DATE)
    granted_at = datetime.datetime.strptime(granted["granted_at"], DATE)
    assert expires - granted_at == datetime.timedelta(seconds=60)
    assert state(anon, second["_id"]) == "active"
    events = anon.get(f"/reservations/{body['_id']}/history").json()["_items"]
    assert [e["action"] for e in events] == ["queued", "granted"]
    assert check.check(server.db) == []


def test_long_poll_answers_on_the_grant(operator, anon, server):
    add_machines(operator, "m1")
    held = post(operator, 201, count=1).json()
    waiting = post(operator, 202, count=1, wait_seconds=600).json()
    # Unchanged: answers after the wait with the current document.
    started = time.monotonic()
    assert anon.get(f"/reservations/{waiting['_id']}?wait=1").json()["state"] == "queued"
    assert time.monotonic() - started >= 1
    import threading

    answer = {}

    def poll():
        # state=queued: what we last saw, so the answer is the same whether the poll or the grant comes first.
        answer["body"] = anon.get(f"/reservations/{waiting['_id']}?wait=30&state=queued").json()

    poller = threading.Thread(target=poll)
    poller.start()
    release(operator, held["_id"])
    poller.join(30)
    assert answer["body"]["state"] == "active" and answer["body"]["hostnames"] == ["m1"]
    # A poll that names a state it saw before the grant is answered at once (not after its 60 s).
    again = anon.get(f"/reservations/{waiting['_id']}?wait=60&state=queued", timeout=15)
    assert again.status_code == 200 and again.json()["state"] == "active"
    for bad in ("-1", "61", "x", "1.5"):
        response = anon.get(f"/reservations/{waiting['_id']}?wait={bad}")
        assert response.status_code == 400, bad
        assert "wait must be" in response.json()["_error"]["message"]


def test_cancel_a_queued_request(operator, anon, server):
    add_machines(operator, "m1")
    held = post(operator, 201, count=1).json()
    waiting = post(operator, 202, count=1, wait_seconds=600, job_id="j").json()
    assert release(operator, waiting["_id"]) == {"released": [], "reservations": [waiting["_id"]],
                                                 "state": "cancelled"}
    assert release(operator, waiting["_id"]) == {"released": [], "reservations": [], "state": "cancelled"}
    release(operator, held["_id"])
    assert state(anon, waiting["_id"]) == "cancelled"
    assert anon.get("/machines/m1").json()["state"] == "idle"
    events = anon.get(f"/reservations/{waiting['_id']}/history").json()["_items"]
    assert [(e["action"], e["user"]) for e in events] == [("queued", "operator"), ("cancelled", "operator")]


def test_a_wait_that_runs_out_times_out(operator, anon, clock):
    add_machines(operator, "m1")
    post(operator, 201, count=1)
    waiting = post(operator, 202, count=1, wait_seconds=1).json()
    clock.advance(2)
    swept = operator.post("/reservations/sweep").json()
    assert swept["queue"] == {"granted": [], "timed_out": [waiting["_id"]]}
    assert state(anon, waiting["_id"]) == "timed_out"
    assert release(operator, waiting["_id"]) == {"released": [], "reservations": [], "state": "timed_out"}
    events = anon.get(f"/reservations/{waiting['_id']}/history").json()["_items"]
    assert [e["action"] for e in events] == ["queued", "timed_out"]


def test_adding_machines_serves_the_queue(operator, anon, server):
    gpu = {"tags.gpu": "a100"}
    add_machines(operator, "g2", state="needs_repair", tags={"gpu": "a100"})
    # Two can never be met by the one machine there is: refused at once, not queued.
    refused = post(operator, 409, count=2, wait_seconds=600, where=gpu).json()
    assert refused["_error"]["message"] == ("requested 2, but only 1 machine matches the constraints (in any "
                                            "state): it can never be met")
    add_machines(operator, "g1", tags={"gpu": "a100"})
    waiting = post(operator, 202, count=2, wait_seconds=600, where=gpu).json()
    # It needs g2, which no lease brings back: no start can be given, and it earmarks nothing.
    assert (waiting["eta"], waiting["position"]) == (None, 1)
    assert "1 idle, 1 needs_repair" in waiting["why"]
    held = post(operator, 201, count=1, where=gpu, lease_seconds=60).json()
    assert held["hostnames"] == ["g1"]
    etag = anon.get("/machines/g2").json()["_etag"]
    assert operator.patch("/machines/g2", json={"state": "idle"}, headers={"If-Match": etag}).status_code == 200
    # g1 comes back when its lease ends: now the start is known, and g2 is earmarked for it.
    now = anon.get(f"/reservations/{waiting['_id']}").json()
    assert now["state"] == "queued" and now["eta"] == held["expires"]
    assert now["blocked_by"] == {"reservations": [{"_id": held["_id"], "expires": held["expires"]}], "requests": []}
    assert post(operator, 409, count=1, where=gpu, lease_seconds=3600).json()["_error"]["message"] == EARMARKED
    release(operator, held["_id"])
    assert anon.get(f"/reservations/{waiting['_id']}").json()["hostnames"] == ["g1", "g2"]


def test_a_large_request_is_not_starved_by_small_ones(operator, anon, server):
    add_machines(operator, *[f"m{i}" for i in range(4)])
    small = [post(operator, 201, count=1).json() for _ in range(4)]
    big = post(operator, 202, count=3, wait_seconds=600).json()
    # A stream of small waiting requests behind it, and machines freed one at a time: each freed
    # machine is earmarked for the big request, not handed to the small ones that came later.
    later = [post(operator, 202, count=1, wait_seconds=600).json() for _ in range(3)]
    for n, res in enumerate(small[:3]):
        release(operator, res["_id"])
        assert state(anon, big["_id"]) == ("active" if n == 2 else "queued")
        assert all(state(anon, r["_id"]) == "queued" for r in later)
    release(operator, small[3]["_id"])
    assert [state(anon, r["_id"]) for r in later] == ["active", "queued", "queued"]
    positions = [r["position"] for r in anon.get("/reservations?state=queued").json()["_items"]]
    assert positions == [1, 2]


def test_bad_waits_are_422_and_change_nothing(operator, server):
    add_machines(operator, "m1")
    for bad, message in ((-1, "must be at least 0"), (3601, "must be at most 3600"), ("10", "must be an integer"),
                         (1.5, "must be an integer"), (True, "must be an integer")):
        body = post(operator, 422, count=1, wait_seconds=bad).json()
        assert body["_issues"] == {"wait_seconds": message}, bad
    assert server.db.reservations.count_documents({}) == 0
    assert post(operator, 201, count=1, wait_seconds=0).json()["state"] == "active"


def test_idempotency_key_replays_a_queued_request(operator, anon, server):
    add_machines(operator, "m1")
    held = post(operator, 201, count=1).json()
    headers = {"Idempotency-Key": "wait-1"}
    first = operator.post("/reservations", json={"count": 1, "wait_seconds": 600}, headers=headers)
    again = operator.post("/reservations", json={"count": 1, "wait_seconds": 600}, headers=headers)
    assert (first.status_code, again.status_code) == (202, 202)
    assert first.json()["_id"] == again.json()["_id"] and again.json()["position"] == 1
    release(operator, held["_id"])
    replay = operator.post("/reservations", json={"count": 1, "wait_seconds": 600}, headers=headers)
    assert replay.status_code == 201 and replay.json()["hostnames"] == ["m1"]
    assert server.db.reservations.count_documents({}) == 2


def test_a_grant_cut_short_by_a_crash_goes_back_in_line(operator, anon, server):
    add_machines(operator, "m0", "m1", "m2")
    db = server.db
    now = datetime.datetime.now(datetime.timezone.utc)
    long_ago = now - datetime.timedelta(hours=1)
    ids = {m["hostname"]: m["_id"] for m in db.machines.find()}

    def granting(rid, wait_until, granting_at, **fields):
        db.reservations.insert_one(dict({
            "_id": rid, "state": "pending", "owner": "x", "job_id": "j", "count": 2, "where": "{}", "user": "operator",
            "reason": None, "lease_seconds": None, "hostnames": [], "machine_ids": [], "expires": None,
            "_created": long_ago, "_updated": long_ago, "queued_at": long_ago, "wait_seconds": 7200,
            "wait_until": wait_until, "granting_at": granting_at}, **fields))

    # As a granter killed mid-way leaves things: pending (since the grant began), a claim, one machine taken.
    granting("cut-short", now + datetime.timedelta(hours=1), long_ago)
    db.machine_claims.insert_one({"_id": ids["m0"], "hostname": "m0", "holder": "cut-short", "at": long_ago})
    # (the machine's change as the granter makes it: counted in the same step, core/counts.py)
    counts.update_machine(db, {"hostname": "m0"}, {"state": "in_use", "owner": "x", "reservation": "cut-short"})
    # One whose wait ran out meanwhile, and one whose grant began just now (a live granter: left alone).
    granting("too-late", now - datetime.timedelta(seconds=1), long_ago)
    granting("live", now + datetime.timedelta(hours=1), now, queued_at=now)
    swept = operator.post("/reservations/sweep").json()
    assert (swept["repaired"], swept["released"]) == (2, ["m0"])
    # Back in line at its old place, so the sweep's granting pass served it.
    assert swept["queue"] == {"granted": ["cut-short"], "timed_out": []}
    assert anon.get("/reservations/cut-short").json()["hostnames"] == ["m0", "m1"]
    assert (state(anon, "too-late"), state(anon, "live")) == ("timed_out", "pending")
    db.reservations.delete_one({"_id": "live"})
    assert check.check(db) == []


def test_a_dry_run_counts_the_machines_earmarked_for_the_line_as_taken(operator, server):
    add_machines(operator, "m1", "m2")
    post(operator, 201, count=1)  # takes m1
    post(operator, 202, count=2, wait_seconds=600)  # waits for two: earmarks m2
    dry = operator.post("/reservations?dry_run=1", json={"count": 1})
    assert dry.status_code == 200
    body = dry.json()
    assert (body["would_reserve"], body["available"], body["earmarked"]) == ([], 0, 1)
    assert "1 of those earmarked for requests waiting in line" in body["explanation"]
    # As the dry run said: a request that does not wait is refused, the one in line keeps m2 earmarked.
    assert post(operator, 409, count=1).json()["_error"]["message"] == EARMARKED
