"""The client rides out restarts: the database stopped and restarted, the API process restarted, answers lost.

Everything goes over real HTTP to the real server on the embedded database. Faults are set off by
deterministic hooks: the client's own `on_retry` notice (the database or the server comes back
when the client has seen it gone), and a WSGI middleware that lets the app do its work and then
breaks the connection before the answer (a lost answer, exactly once).
"""

import io
import json
import re
import socket
import threading
import time

import pymongo
import pytest

from resource_manager.cli.main import Environment, main
from resource_manager.clientlib.client import APIError, PreconditionFailed, ResourceManagerClient, TransportError
from resource_manager.clientlib.retry import describe_failure

from .deployed import Gunicorn
from .support import ADMIN, OPERATOR, LiveServer, free_port

FAST_FAIL = {"connect": False, "tz_aware": True, "serverSelectionTimeoutMS": 500, "connectTimeoutMS": 500}
MACHINES = [{"hostname": f"m{i}", "state": "idle", "tags": {"rack": "r1"}} for i in range(6)]


def client_for(url, events=None, **options):
    """A client as the operator; every retry notice goes to `events`."""
    options.setdefault("on_retry", events.append if events is not None else None)
    return ResourceManagerClient("machines", url, *OPERATOR, environ={}, **options)


def run_threads(jobs, meanwhile, timeout=90):
    """Run each job in a thread of its own and `meanwhile()` in this one; return {name: result or exception}.

    `meanwhile` restarts what the jobs found gone: here, not in a job's thread, since the embedded
    database dies with the thread that started it (PR_SET_PDEATHSIG).
    """
    results = {}

    def run(name, job):
        try:
            results[name] = job()
        except Exception as e:  # kept for the assertions
            results[name] = e

    threads = [threading.Thread(target=run, args=item, daemon=True) for item in jobs.items()]
    for thread in threads:
        thread.start()
    try:
        meanwhile()
    finally:
        for thread in threads:
            thread.join(timeout)
    assert not any(t.is_alive() for t in threads), "a client did not finish in time"
    return results


class HookedStream(io.StringIO):
    """A stderr for the CLI that calls `hook` when the CLI says it will retry."""

    def __init__(self, hook):
        super().__init__()
        self.hook = hook

    def write(self, text):
        written = super().write(text)
        if "; retry " in text:
            self.hook()
        return written


def cli(argv, url, hook=None):
    """Run rmctl in-process as the operator; return (exit code, stdout, stderr)."""
    out = io.StringIO()
    err = HookedStream(hook or (lambda: None))
    env = Environment(stdin=io.StringIO(), stdout=out, stderr=err, environ={}, config_dir="/nonexistent",
                      stdout_isatty=False, stderr_isatty=False, prog="rmctl")
    code = main(["-e", url, "-u", OPERATOR[0], "-p", OPERATOR[1], *argv], env)
    return code, out.getvalue(), err.getvalue()


# -- the database stopped and restarted -------------------------------------------------------

def test_reads_writes_and_reservations_ride_out_a_database_restart(own_db, users_file):
    live = LiveServer({"MONGO_URI": own_db.uri, "MONGO_DBNAME": "retry", "USERS_FILE": users_file,
                       "MONGO_OPTIONS": FAST_FAIL})
    try:
        api = live.session(OPERATOR)
        assert api.post("/machines", json=MACHINES).status_code == 201
        own_db.stop()

        # Without retries, or with less time than Retry-After asks for, the 503 comes back at once.
        events = []
        with pytest.raises(APIError) as e:
            client_for(live.url, events, max_retries=0).list()
        assert e.value.status == 503
        with pytest.raises(APIError) as e:
            client_for(live.url, events, retry_time=2).get("m0")
        assert e.value.status == 503 and events == []
        # A POST that creates and carries no Idempotency-Key is not repeated: a 503 may hide a write.
        with pytest.raises(APIError) as e:
            client_for(live.url, events).create({"hostname": "during", "state": "idle"})
        assert e.value.status == 503 and events == []

        # The database comes back once every client has said it will retry: each saw it gone.
        gone = {name: threading.Event() for name in ("reader", "writer", "reserver", "cli")}
        seen = {name: [] for name in ("reader", "writer", "reserver")}

        def hooked(name):
            return client_for(live.url, on_retry=lambda event: (seen[name].append(event), gone[name].set()))

        def restart():
            assert all(event.wait(60) for event in gone.values()), "a client never noticed the database was gone"
            own_db.start()

        started = time.monotonic()
        results = run_threads({
            "reader": lambda: hooked("reader").list(sort="hostname"),
            "writer": lambda: hooked("writer").update("m5", {"owner": "ops", "tags": {"slot": 3}}),
            "reserver": lambda: hooked("reserver").reserve(2, job_id="db-blip", lease_seconds=600),
            "cli": lambda: cli(["reserve", "--count", "1", "--job-id", "db-blip-cli", "--format", "json"],
                               live.url, hook=gone["cli"].set),
        }, restart)
        took = time.monotonic() - started
    finally:
        live.stop()
    print(f"\ndatabase restart: 4 clients answered after {took:.1f} s; retries per client: "
          + ", ".join(f"{name} {len(events)}" for name, events in seen.items()))

    assert [m["hostname"] for m in results["reader"]] == [m["hostname"] for m in MACHINES]
    assert results["writer"]["owner"] == "ops" and results["writer"]["tags"] == {"rack": "r1", "slot": 3}
    assert len(results["reserver"]["hostnames"]) == 2
    for name, events in seen.items():
        # Each saw the database gone, and waited what Retry-After said.
        assert events and {e.status for e in events} == {503}, (name, events)
        assert {e.wait for e in events} == {5.0}, (name, events)
    code, out, err = results["cli"]
    assert code == 0, err
    assert len(json.loads(out)["hostnames"]) == 1
    assert "rmctl: POST /reservations: 503 Service Unavailable; retry 1 of 5 in 5.0 s\n" in err

    with pymongo.MongoClient(own_db.uri) as db_client:
        db = db_client.retry
        reservations = list(db.reservations.find({"state": "active"}))
        assert sorted(r["job_id"] for r in reservations) == ["db-blip", "db-blip-cli"]
        assert all(r["idempotency_key"].startswith("rmc-") for r in reservations)
        held = [h for r in reservations for h in r["hostnames"]]
        assert len(held) == len(set(held)) == 3
        assert db.machines.count_documents({"state": "in_use"}) == 3
        assert db.machines.count_documents({"hostname": "during"}) == 0


# -- the API process stopped and started again on the same port ---------------------------------

def test_requests_ride_out_a_server_restart_on_the_same_port(localdb, dbname, users_file, tmp_path):
    server = Gunicorn(localdb.uri, dbname, users_file, str(tmp_path / "gunicorn.log"), workers=1, threads=4)
    server.start()
    try:
        client = client_for(server.url)
        client.create_many(MACHINES)
        server.stop()
        seen = {name: [] for name in ("reader", "creator", "reserver")}
        gone = {name: threading.Event() for name in seen}

        def hooked(name):
            return client_for(server.url, max_retries=20, retry_time=60, retry_backoff=0.2,
                              on_retry=lambda event: (seen[name].append(event), gone[name].set()))

        def restart():
            assert all(event.wait(60) for event in gone.values()), "a client never noticed the server was gone"
            server.start()

        started = time.monotonic()
        results = run_threads({
            "reader": lambda: hooked("reader").get("m1"),
            # Refused connections are retried for every method: nothing reached the server.
            "creator": lambda: hooked("creator").create({"hostname": "late", "state": "idle"}),
            "reserver": lambda: hooked("reserver").reserve(2, job_id="api-blip"),
        }, restart)
        print(f"\nserver restart: 3 clients answered after {time.monotonic() - started:.1f} s; retries per client: "
              + ", ".join(f"{name} {len(events)}" for name, events in seen.items()))
        assert results["reader"]["hostname"] == "m1"
        assert results["creator"]["hostname"] == "late"
        assert len(results["reserver"]["hostnames"]) == 2
        for name, events in seen.items():
            assert events and {describe_failure(e) for e in events} == {"connection refused"}, (name, events)
        with pymongo.MongoClient(localdb.uri) as db_client:
            db = db_client[dbname]
            assert db.machines.count_documents({"hostname": "late"}) == 1
            assert db.reservations.count_documents({"job_id": "api-blip"}) == 1
    finally:
        server.stop()
        with pymongo.MongoClient(localdb.uri) as db_client:
            db_client.drop_database(dbname)


# -- lost answers: the write happened, the answer never came --------------------------------------

class DropAnswers:
    """Let the app handle a request, then break the connection before the answer, for the first `times` matches.

    `after(environ)` runs once the dropped request was handled (to change things before the retry).
    `seen` lists (method, path, status) of every request, "lost" for the dropped ones.
    """

    def __init__(self, method, path, times=1, after=None):
        self.method, self.path, self.left, self.after = method, path, times, after
        self.seen = []
        self.app = None
        self._lock = threading.Lock()

    def __call__(self, environ, start_response):
        key = (environ["REQUEST_METHOD"], environ["PATH_INFO"])
        with self._lock:
            drop = self.left > 0 and key == (self.method, self.path)
            self.left -= drop
        if not drop:
            def record(status, headers, exc_info=None):
                self.seen.append((*key, int(status.split()[0])))
                return start_response(status, headers, exc_info)

            return self.app(environ, record)
        body = self.app(environ, lambda status, headers, exc_info=None: (lambda data: None))
        for _chunk in body:
            pass
        getattr(body, "close", lambda: None)()
        self.seen.append((*key, "lost"))
        if self.after:
            self.after(environ)
        environ["werkzeug.socket"].shutdown(socket.SHUT_RDWR)
        raise ConnectionResetError("the test dropped this answer")

    def calls(self, method, path):
        return [status for m, p, status in self.seen if (m, p) == (method, path)]


@pytest.fixture
def seeded(server, admin):
    assert admin.post("/machines", json=MACHINES).status_code == 201
    return server


def test_a_reservation_whose_answer_was_lost_is_asked_again_with_its_key_and_made_once(seeded):
    drop = seeded.wrap(DropAnswers("POST", "/reservations"))
    events = []
    reservation = client_for(seeded.url, events).reserve(2, job_id="lost-1")
    assert drop.calls("POST", "/reservations") == ["lost", 201]
    assert [describe_failure(e) for e in events] == ["connection broke before the answer"]
    stored = list(seeded.db.reservations.find({"job_id": "lost-1"}))
    assert [r["_id"] for r in stored] == [reservation["_id"]]
    assert sorted(reservation["hostnames"]) == sorted(stored[0]["hostnames"])
    assert seeded.db.machines.count_documents({"state": "in_use"}) == 2

    # Without retries the caller is told the truth: the answer is lost, the reservation may exist.
    drop.left = 1
    with pytest.raises(TransportError, match="broke before the answer came; it may or may not have been done"):
        client_for(seeded.url, max_retries=0).reserve(1, job_id="lost-2")
    assert seeded.db.reservations.count_documents({"job_id": "lost-2"}) == 1


def test_a_create_whose_answer_was_lost_is_not_repeated(seeded):
    drop = seeded.wrap(DropAnswers("POST", "/machines"))
    events = []
    with pytest.raises(TransportError, match="POST /machines: the connection .* it may or may not have been done"):
        client_for(seeded.url, events).create({"hostname": "once", "state": "idle"})
    assert events == [] and drop.calls("POST", "/machines") == ["lost"]
    assert seeded.db.machines.count_documents({"hostname": "once"}) == 1


def test_if_match_writes_whose_answer_was_lost_re_read_and_tell_the_truth(seeded, admin):
    client = client_for(seeded.url)
    drop = seeded.wrap(DropAnswers("PATCH", "/machines/m0"))
    m0 = client.get("m0")
    drop.path = f"/machines/{m0['_id']}"
    # PATCH: the retry gets 412 (the lost attempt changed the _etag); the item holds what we sent.
    doc = client.update("m0", {"owner": "ci", "tags": {"slot": 1}})
    assert drop.calls("PATCH", drop.path) == ["lost", 412]
    assert (doc["owner"], doc["tags"]) == ("ci", {"rack": "r1", "slot": 1})
    assert [h["action"] for h in admin.get("/machines/m0/history").json()["_items"]].count("update") == 1

    # PUT: the same, through the original API's put_resource().
    drop.method, drop.left = "PUT", 1
    doc = client.put_resource({**client.get("m0"), "owner": "ci-2", "tags": {"rack": "r2"}})
    assert drop.calls("PUT", drop.path) == ["lost", 412]
    assert (doc["owner"], doc["tags"]) == ("ci-2", {"rack": "r2"})

    # DELETE: gone is what we asked for. Eve answers 204 for an item already gone (a 404 would do too).
    m1 = client.get("m1")
    drop.method, drop.path, drop.left = "DELETE", f"/machines/{m1['_id']}", 1
    assert client.delete("m1") is None
    assert drop.calls("DELETE", drop.path) == ["lost", 204]
    assert seeded.db.machines.count_documents({"hostname": "m1"}) == 0

    # Someone else wrote after our lost attempt: the 412 is real, and says so.
    m2 = client.get("m2")
    other = seeded.session(ADMIN)
    drop.method, drop.path, drop.left = "PATCH", f"/machines/{m2['_id']}", 1
    drop.after = lambda _environ: other.write("PATCH", "/machines/m2", {"owner": "someone-else"})
    with pytest.raises(PreconditionFailed):
        client.update("m2", {"owner": "me"})
    assert client.get("m2")["owner"] == "someone-else"


def test_a_release_whose_answer_was_lost_reports_the_machines_it_freed(seeded):
    client = client_for(seeded.url)
    reservation = client.reserve(3, job_id="lost-release")
    drop = seeded.wrap(DropAnswers("DELETE", f"/reservations/{reservation['_id']}"))
    result = client.release(reservation["_id"])
    assert drop.calls("DELETE", drop.path) == ["lost", 200]
    assert result == {"released": sorted(reservation["hostnames"]), "reservations": [reservation["_id"]],
                      "replayed": True}
    assert seeded.db.machines.count_documents({"state": "in_use"}) == 0


# -- the bounds -----------------------------------------------------------------------------------

def test_retries_are_bounded_in_count_and_in_time():
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens: connection refused
    events = []
    with pytest.raises(TransportError, match=r"connection refused \(gave up after 3 retries in [\d.]+ s\)$"):
        client_for(url, events, max_retries=3, retry_backoff=0.01).list()
    assert [e.attempt for e in events] == [1, 2, 3] and {e.max_retries for e in events} == {3}
    assert [e.wait for e in events][0] == 0  # urllib3 retries once at once, then backs off

    clock = []
    with pytest.raises(TransportError, match="gave up after"):
        client_for(url, max_retries=1000, retry_time=0.5, retry_backoff=0.05,
                   on_retry=lambda e: clock.append((time.monotonic(), e.wait))).get("m0")
    first = clock[0][0]
    # Every wait doubles until cut to the time left: no attempt starts past 0.5 s after the first failure.
    assert 3 < len(clock) < 1000
    assert all(at + wait <= first + 0.5 + 1e-3 for at, wait in clock)


def test_cli_flags_win_over_the_environment_and_retries_are_noted_on_stderr():
    url = f"http://127.0.0.1:{free_port()}"
    out, err = io.StringIO(), io.StringIO()
    env = Environment(stdin=io.StringIO(), stdout=out, stderr=err, config_dir="/nonexistent",
                      environ={"RM_MAX_RETRIES": "0", "RM_RETRY_BACKOFF": "5"}, prog="rmctl")
    assert main(["list", "-e", url, "--max-retries", "2", "--retry-backoff", "0"], env) == 6
    lines = err.getvalue().splitlines()
    assert lines[:2] == ["rmctl: GET /machines: connection refused; retry 1 of 2 in 0.0 s",
                         "rmctl: GET /machines: connection refused; retry 2 of 2 in 0.0 s"]
    assert re.fullmatch(rf"rmctl: cannot connect to {url}: connection refused \(gave up after 2 retries in [\d.]+ s\)",
                        lines[2]) and len(lines) == 3
    code, _out, err = cli(["list", "--max-retries", "-1"], url)
    assert code == 2 and "--max-retries: must not be negative" in err


def test_a_job_step_run_twice_with_its_own_key_reserves_once(seeded):
    argv = ["reserve", "--count", "2", "--job-id", "build-7", "--idempotency-key", "build-7-hosts", "--format", "json"]
    first, again = cli(argv, seeded.url), cli(argv, seeded.url)
    assert first[0] == again[0] == 0, (first, again)
    assert json.loads(first[1])["_id"] == json.loads(again[1])["_id"]
    assert seeded.db.reservations.count_documents({"job_id": "build-7"}) == 1
    assert seeded.db.machines.count_documents({"state": "in_use"}) == 2
