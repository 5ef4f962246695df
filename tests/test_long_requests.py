"""Event streams under gunicorn: capped per process, never the threads ordinary requests need, ending by themselves."""

import os
import uuid

import pymongo
import pytest
import requests

from .deployed import Gunicorn
from .sse import Stream


@pytest.fixture
def one_worker(localdb, users_file, tmp_path):
    """gunicorn with one worker of 4 threads, 2 of them for long requests; streams last 8 s."""
    dbname = f"test_long_{uuid.uuid4().hex[:8]}"
    server = Gunicorn(localdb.uri, dbname, users_file, os.path.join(tmp_path, "gunicorn.log"), workers=1,
                      threads=4, env={"RM_LONG_REQUEST_SLOTS": "2", "RM_EVENTS_STREAM_SECONDS": "8"})
    with server:
        yield server
    with pymongo.MongoClient(localdb.uri) as client:
        client.drop_database(dbname)


def test_streams_are_capped_and_the_rest_of_the_api_is_answered_meanwhile(one_worker):
    url = one_worker.url
    streams = [Stream(url, retry=False) for _ in range(2)]
    try:
        assert [s.response.status_code for s in streams] == [200, 200]
        refused = requests.get(url + "/events", timeout=5)
        assert refused.status_code == 503 and refused.headers["Retry-After"] == "5"
        assert refused.json()["_status"] == "ERR" and refused.json()["_error"]["code"] == 503
        # The two threads not held by streams answer everything else, now (a starved worker would keep
        # these waiting until a stream ends, 8 s after it began: the timeout would fire first).
        for _ in range(10):
            assert requests.get(url + "/healthz", timeout=4).status_code == 200
            assert requests.get(url + "/machines", timeout=4).status_code == 200
        # Each stream ends by itself; its slot is free again.
        assert all(s.ended.wait(20) for s in streams)
        with Stream(url, retry=False) as again:
            assert again.response.status_code == 200
    finally:
        for s in streams:
            s.close()


def test_a_client_that_hangs_up_gives_its_slot_back(one_worker):
    url = one_worker.url
    with Stream(url, retry=False) as first, Stream(url, retry=False) as second:
        assert first.response.status_code == second.response.status_code == 200
    # Both hung up: within a second or so their slots are free (no need to wait for the streams' end).
    with Stream(url, retry=True) as third, Stream(url, retry=True) as fourth:
        assert third.response.status_code == fourth.response.status_code == 200


def test_a_hundred_long_polls_never_starve_healthz_or_ordinary_requests(one_worker):
    # Issue 20: anonymous long polls of any reservation held every thread; /healthz went unanswered.
    import threading

    from .support import OPERATOR

    url = one_worker.url
    with requests.Session() as s:
        s.auth = OPERATOR
        assert s.post(url + "/machines", json={"hostname": "m1", "state": "idle"}, timeout=10).status_code == 201
        assert s.post(url + "/reservations", json={"count": 1}, timeout=10).status_code == 201
        waiting = s.post(url + "/reservations", json={"count": 1, "wait_seconds": 600}, timeout=10).json()
    answers, stop = [], threading.Event()

    def poll():
        with requests.Session() as s:
            while not stop.is_set():
                r = s.get(url + f"/reservations/{waiting['_id']}", params={"wait": 3, "state": "queued"}, timeout=30)
                answers.append((r.status_code, r.headers.get("Retry-After")))
                if r.status_code == 503:
                    stop.wait(0.2)

    pollers = [threading.Thread(target=poll) for _ in range(100)]
    for t in pollers:
        t.start()
    try:
        # The two threads not held by long polls answer everything else (starved, these would time out).
        for _ in range(10):
            assert requests.get(url + "/healthz", timeout=5).status_code == 200
            assert requests.get(url + "/machines/m1", timeout=5).status_code == 200
    finally:
        stop.set()
        for t in pollers:
            t.join(60)
    assert {status for status, _ in answers} <= {200, 503}
    assert (200, None) in answers and (503, "5") in answers  # two polls held, the rest told to come back
