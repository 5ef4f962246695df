"""Slow clients (issue 13, finding 5): a body is refused before it is read when the route needs
credentials that are missing, and is read within BODY_TIMEOUT otherwise; gunicorn as deployed
keeps answering while slow clients hold connections."""

import base64
import socket
import time
import uuid

import pymongo
import pytest
import requests

from .deployed import Gunicorn
from .support import OPERATOR, LiveServer

BASIC = "Basic " + base64.b64encode(f"{OPERATOR[0]}:{OPERATOR[1]}".encode()).decode()


def start_request(url, method, path, length=100_000, first=b'{"hostname": "', headers=None):
    """Open a connection, send the headers and the first bytes of a body of `length`; return the socket."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=30)
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", "Content-Type: application/json",
             f"Content-Length: {length}", *(f"{k}: {v}" for k, v in (headers or {}).items())]
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + first)
    return sock


def status_of(sock):
    """Read the status code of the answer on `sock` (it arrives within the socket's timeout, or fails)."""
    data = b""
    while b"\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return int(data.split(b" ", 2)[1])


@pytest.fixture(scope="module")
def shared(localdb, users_file):
    """One server for the anonymous cases: each is refused and changes nothing."""
    dbname = f"test_slow_anon_{uuid.uuid4().hex[:8]}"
    live = LiveServer({"MONGO_URI": localdb.uri, "MONGO_DBNAME": dbname, "USERS_FILE": users_file,
                       "SECRET_KEY": "test-secret-key"})
    yield live
    live.stop()
    with pymongo.MongoClient(localdb.uri) as client:
        client.drop_database(dbname)


@pytest.mark.parametrize(("method", "path"), [("POST", "/machines"), ("PATCH", "/machines/seed-1"),
                                              ("PUT", "/machines/seed-1"), ("POST", "/reservations"),
                                              ("POST", "/address-pools"), ("POST", "/address-pools/p/allocate"),
                                              ("POST", "/reservations/x/extend"),
                                              ("POST", "/ui/machines/seed-1/state")])
def test_an_anonymous_slow_body_is_refused_before_it_is_read(shared, method, path):
    # The body never comes (100,000 bytes announced, 14 sent): the answer cannot wait for it.
    sock = start_request(shared.url, method, path)
    try:
        assert status_of(sock) == 401
    finally:
        sock.close()
    assert shared.db.machines.count_documents({}) == 0


def test_an_authenticated_slow_body_gets_408_at_the_deadline(localdb, users_file, dbname):
    live = LiveServer({"MONGO_URI": localdb.uri, "MONGO_DBNAME": dbname, "USERS_FILE": users_file,
                       "BODY_TIMEOUT": 1})
    try:
        for trickle in (False, True):  # a client that stalls, and one that sends a byte now and then
            sock = start_request(live.url, "POST", "/machines", headers={"Authorization": BASIC})
            try:
                if trickle:
                    for _ in range(6):  # 6 × 0.3 s: past the 1 s deadline, each byte before any read timeout
                        time.sleep(0.3)
                        try:
                            sock.sendall(b"a")
                        except OSError:
                            break  # the server stopped reading
                assert status_of(sock) == 408
            finally:
                sock.close()
        # A whole body sent at once is fine, and nothing of the slow ones was stored.
        assert requests.post(live.url + "/machines", json={"hostname": "ok", "state": "idle"}, auth=OPERATOR,
                             timeout=30).status_code == 201
        assert [m["hostname"] for m in live.db.machines.find()] == ["ok"]
    finally:
        live.stop()
        with pymongo.MongoClient(localdb.uri) as client:
            client.drop_database(dbname)


def test_slow_clients_do_not_hold_gunicorn_threads(localdb, users_file, tmp_path):
    # One worker of two threads, as deployed otherwise: 8 anonymous slow bodies and 4 authenticated
    # ones at once, then /healthz and a write must still be answered.
    dbname = f"test_slow_{uuid.uuid4().hex[:8]}"
    app = Gunicorn(localdb.uri, dbname, users_file, str(tmp_path / "gunicorn.log"), workers=1, threads=2,
                   env={"RM_BODY_TIMEOUT": "2"})
    with app:
        slow = [start_request(app.url, "POST", "/machines") for _ in range(8)]
        slow += [start_request(app.url, "POST", "/machines", headers={"Authorization": BASIC}) for _ in range(4)]
        try:
            health = requests.get(app.url + "/healthz", timeout=20)
            assert health.status_code == 200
            created = requests.post(app.url + "/machines", json={"hostname": "fast", "state": "idle"},
                                    auth=OPERATOR, timeout=20)
            assert created.status_code == 201
            assert sorted(status_of(s) for s in slow) == [401] * 8 + [408] * 4
        finally:
            for s in slow:
                s.close()
    with pymongo.MongoClient(localdb.uri) as client:
        assert [m["hostname"] for m in client[dbname].machines.find()] == ["fast"]
        client.drop_database(dbname)
