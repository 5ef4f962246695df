"""The queue's proofs: many clients against two server processes sharing one database.

No false refusals (a 409 only when the supply is truly short, once contenders settled), waiting
clients granted in order of arrival as machines come back, no machine handed out twice, and
nothing lost or half-made when a server is SIGKILLed under load (then swept). Checked in the
database itself after each round (rm-check and the invariants of test_allocation_concurrency).
"""

import random
import re
import threading
import time

import pytest
import requests

from resource_manager.core import check

from .cluster import cluster_fixtures, running_cluster
from .support import ADMIN, run_together
from .test_allocation_concurrency import add_machines, check_machines, session

THREADS = 32
MACHINES = 40


# One user makes every request here: the per-user limit of waiting requests (10) is lifted.
shared, cluster = cluster_fixtures("queue", env={"RM_QUEUE_MAX_WAITING_PER_USER": "1000"})


def release_all(urls, ids):
    def release(i):
        with session() as s:
            return s.delete(urls[i % 2] + f"/reservations/{ids[i]}", timeout=60).status_code

    assert set(run_together(len(ids), release)) <= {200}


@pytest.mark.parametrize("rounds", [2, pytest.param(12, marks=pytest.mark.slow)])
def test_no_false_refusals_under_contention(cluster, rounds):
    """Issue 14's case: 32 clients at once, each asking for 3 of 40 idle machines: exactly 13 granted."""
    cluster, db = cluster
    urls = cluster.urls
    add_machines(urls[0], MACHINES)
    for round_ in range(rounds):
        def reserve(i, round_=round_):
            with session() as s:
                r = s.post(urls[i % 2] + "/reservations", json={"count": 3, "owner": f"t{i}", "job_id": f"r{round_}"},
                           timeout=60)
            return r.status_code, r.json()

        results = run_together(THREADS, reserve)
        statuses = sorted(status for status, _ in results)
        assert statuses == [201] * 13 + [409] * 19, [b for s, b in results if s not in (201, 409)]
        assert all(re.fullmatch(r"requested 3, [012] available", b["_error"]["message"])
                   for s, b in results if s == 409)
        assert check_machines(db) == 39
        assert check.check(db) == []
        release_all(urls, [b["_id"] for s, b in results if s == 201])
        assert check_machines(db) == 0


def test_waiting_clients_are_granted_in_order_of_arrival(cluster):
    """More demand than supply, all waiting: each wave of releases serves the head of the line."""
    cluster, db = cluster
    urls = cluster.urls
    add_machines(urls[0], 12)

    def reserve(i):
        with session() as s:
            r = s.post(urls[i % 2] + "/reservations", json={"count": 2, "owner": f"t{i}", "wait_seconds": 120},
                       timeout=60)
        return r.status_code, r.json()

    results = run_together(24, reserve)
    assert {s for s, _ in results} <= {201, 202}
    assert all(b["state"] == "active" for s, b in results if s == 201)
    # A machine let go by a request that fell short goes to the line at the next pass (the sweep runs one).
    with session() as s:
        assert s.post(urls[0] + "/reservations/sweep", timeout=60).status_code == 200
    assert db.reservations.count_documents({"state": "active"}) == 6
    assert check_machines(db) == 12
    listing = session().get(urls[1] + "/reservations?state=queued").json()["_items"]
    assert [r["position"] for r in listing] == list(range(1, 19))
    line = [r["_id"] for r in listing]
    active = [r["_id"] for r in db.reservations.find({"state": "active"})]
    assert sorted(line + active) == sorted(b["_id"] for _, b in results)
    for wave in range(2):
        release_all(urls, active)
        granted = [r["_id"] for r in db.reservations.find({"state": "active"})]
        # The releases handed the machines out before they answered: to the six first in line.
        assert sorted(granted) == sorted(line[6 * wave:6 * wave + 6])
        assert check_machines(db) == 12
        assert check.check(db) == []
        active = granted
    # The six still in line give up: cancelled, and nothing more to grant.
    release_all(urls, line[12:])
    release_all(urls, active)
    assert db.reservations.count_documents({"state": {"$in": ["queued", "pending", "active"]}}) == 0
    assert db.reservations.count_documents({"state": "cancelled"}) == 6
    assert check_machines(db) == 0


@pytest.mark.slow
def test_server_killed_while_serving_the_queue_loses_nothing(localdb, users_file, tmp_path):
    """Waiting clients churn against two servers; one is SIGKILLed; the sweep leaves every request whole."""
    with running_cluster(localdb, users_file, str(tmp_path), "qkill") as (cluster, db):
        victim, survivor = cluster.servers
        add_machines(survivor.url, 12)
        stop = threading.Event()
        answered = {}  # reservation id -> the state a server acknowledged
        lock = threading.Lock()

        def churn(i):
            rng = random.Random(i)
            with session() as s:
                while not stop.is_set():
                    url = (victim.url, survivor.url)[rng.randrange(2)]
                    try:
                        r = s.post(url + "/reservations", json={"count": rng.randint(1, 3), "wait_seconds": 60},
                                   timeout=30)
                        if r.status_code not in (201, 202):
                            continue
                        rid = r.json()["_id"]
                        with lock:
                            answered[rid] = r.json()["state"]
                        got = s.get(survivor.url + f"/reservations/{rid}?wait=1", timeout=30).json()
                        if got["state"] == "active":
                            s.delete(survivor.url + f"/reservations/{rid}", timeout=30)
                    except requests.RequestException:
                        pass

        threads = [threading.Thread(target=churn, args=(i,)) for i in range(16)]
        for t in threads:
            t.start()
        time.sleep(3.0)
        victim.kill()
        time.sleep(2.0)
        stop.set()
        for t in threads:
            t.join(60)
        assert answered
        with session(ADMIN) as s:
            swept = s.post(survivor.url + "/reservations/sweep?grace=0", timeout=60)
        assert swept.status_code == 200, swept.text
        print("queue kill test:", len(answered), "acknowledged;", swept.json())
        check_machines(db)
        assert check.check(db) == []
        # Every acknowledged request is still there, whole: queued (holding nothing), active, or over.
        for rid, _state in answered.items():
            res = db.reservations.find_one({"_id": rid})
            assert res is not None, f"acknowledged reservation {rid} was lost"
            assert res["state"] in ("queued", "active", "released", "timed_out", "cancelled"), res
            if res["state"] == "queued":
                assert db.machine_claims.count_documents({"holder": rid}) == 0


def test_an_expired_lease_goes_to_a_waiter_in_another_process(cluster):
    """No release, no request that needs machines: the tickers reclaim the lease for the line."""
    cluster, db = cluster
    urls = cluster.urls
    add_machines(urls[0], 1)
    with session() as s:
        held = s.post(urls[0] + "/reservations", json={"count": 1, "lease_seconds": 1}, timeout=60).json()
        waiting = s.post(urls[1] + "/reservations", json={"count": 1, "wait_seconds": 60}, timeout=60)
        assert waiting.status_code == 202
        # The lease is a clock; the long-poll answers once a ticker has granted the machine.
        got = s.get(urls[1] + f"/reservations/{waiting.json()['_id']}?wait=20", timeout=60).json()
    assert got["state"] == "active" and got["hostnames"] == held["hostnames"]
    assert db.reservations.find_one({"_id": held["_id"]})["state"] == "expired"
    assert check.check(db) == []
