"""The write lock on FerretDB (core/atomic.py, locks.py, storage.py): which lock, keyed by what, and refusals.

Against the real embedded database: the PostgreSQL advisory lock's exclusion, reentrancy, fork and
death; the lock chosen from what FerretDB stores in (proven, not taken on trust); a set-up that
cannot be made safe answering 503 to writes, naming the fix in the log, and serving reads.
"""

import functools
import logging
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import uuid

import psycopg
import pymongo
import pytest

from resource_manager.core import atomic, locks, storage
from resource_manager.localdb import LocalDB

from .support import OPERATOR, LiveServer, run_together

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def advisory(localdb, key=None):
    """A fresh AdvisoryLock on the embedded PostgreSQL (a key of its own unless given)."""
    key = key if key is not None else int.from_bytes(os.urandom(8), "big", signed=True)
    return locks.AdvisoryLock(functools.partial(storage.connect_postgres, localdb.postgres_url), key, "test")


def held_by_others(localdb, key):
    """Return the pids of PostgreSQL sessions that hold the advisory lock `key`."""
    with psycopg.connect(localdb.postgres_url, autocommit=True) as conn:
        rows = conn.execute("SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND "
                            "((classid::bigint << 32) | objid::bigint) = %s", (key,)).fetchall()
    return [pid for (pid,) in rows]


def test_the_advisory_lock_excludes_other_processes_and_is_reentrant_per_thread(localdb):
    lock = advisory(localdb)
    other = advisory(localdb, lock.key)  # another process's view: a session of its own
    inside, order = threading.Event(), []
    with lock:
        with lock:  # reentrant: the same thread does not wait for itself
            assert len(held_by_others(localdb, lock.key)) == 1

        def contender():
            with other:
                order.append("other")
            inside.set()

        thread = threading.Thread(target=contender)
        thread.start()
        assert not inside.wait(0.3)  # still held by us (depth 1 of 2 let go)
        order.append("us")
    thread.join(10)
    assert order == ["us", "other"] and held_by_others(localdb, lock.key) == []
    lock.close()
    other.close()


def test_threads_of_one_process_take_turns_on_one_session(localdb):
    lock = advisory(localdb)
    active, most = [0], [0]

    def body(_i):
        for _ in range(20):
            with lock:
                active[0] += 1
                most[0] = max(most[0], active[0])
                time.sleep(0.0005)
                active[0] -= 1

    run_together(8, body)
    assert most[0] == 1
    lock.close()


CHILD = textwrap.dedent("""
    import functools, os, sys, time
    from resource_manager.core import locks, storage
    lock = locks.AdvisoryLock(functools.partial(storage.connect_postgres, sys.argv[1]), int(sys.argv[2]), "child")
    with lock:
        print("held", flush=True)
        time.sleep(600)
""")


def test_a_killed_holder_lets_go_at_once(localdb):
    lock = advisory(localdb)
    child = subprocess.Popen([sys.executable, "-c", CHILD, localdb.postgres_url, str(lock.key)], cwd=ROOT,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "held"
        assert len(held_by_others(localdb, lock.key)) == 1
        taken = threading.Event()

        def wait_for_it():
            with lock:
                taken.set()

        waiter = threading.Thread(target=wait_for_it)
        waiter.start()
        assert not taken.wait(0.3)  # waits for the child
        child.send_signal(signal.SIGKILL)
        started = time.monotonic()
        assert taken.wait(10) and time.monotonic() - started < 2
        waiter.join(10)
    finally:
        child.kill()
        child.wait()
        child.stdout.close()
    lock.close()


@pytest.mark.filterwarnings("ignore:.*fork.*:DeprecationWarning")  # Python 3.12+: fork with threads
def test_a_forked_child_takes_the_lock_on_a_session_of_its_own(localdb):
    lock = advisory(localdb)
    with lock:
        pass  # the parent's session is open now
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: must wait for the parent's hold, never share it
        try:
            os.close(read)
            with lock:
                os.write(write, b"held")
        except BaseException as e:  # noqa: BLE001 - said to the parent, whose assertion shows it
            os.write(write, f"fail {e!r}".encode())
        finally:
            os._exit(0)
    os.close(write)
    try:
        with lock:
            time.sleep(0.3)
            os.set_blocking(read, False)
            with pytest.raises(BlockingIOError):
                os.read(read, 4)  # the child is still waiting: the lock was not shared with it
        os.set_blocking(read, True)
        assert os.read(read, 500) == b"held"
    finally:
        os.waitpid(pid, 0)
        os.close(read)
    with lock:  # and the parent's session survived the child's exit
        assert len(held_by_others(localdb, lock.key)) == 1
    lock.close()


def test_a_dropped_session_is_opened_again_at_the_next_write(localdb):
    lock = advisory(localdb)
    with lock:
        (backend,) = held_by_others(localdb, lock.key)
    with psycopg.connect(localdb.postgres_url, autocommit=True) as conn:
        assert conn.execute("SELECT pg_terminate_backend(%s)", (backend,)).fetchone()[0]
    with lock:
        assert held_by_others(localdb, lock.key) not in ([], [backend])
    lock.close()


# The lock chosen, as the API says it (/healthz) and logs it at start.

def serve(localdb, users_file, **settings):
    """A LiveServer on a database of its own with `settings` (create_app overrides)."""
    return LiveServer(dict({"MONGO_URI": localdb.uri, "MONGO_DBNAME": f"test_lock_{uuid.uuid4().hex[:10]}",
                            "USERS_FILE": users_file}, **settings))


def stop(live):
    live.stop()
    with pymongo.MongoClient(live.app.config["MONGO_URI"]) as client:
        client.drop_database(live.app.config["MONGO_DBNAME"])


def test_the_embedded_database_needs_no_setting_its_record_is_proven_and_used(localdb, users_file, caplog):
    caplog.set_level(logging.INFO, "resource_manager.core.atomic")
    live = serve(localdb, users_file)
    try:
        body = live.session().get("/healthz").json()
        assert (body["write_lock"], body["write_lock_scope"], body["status"]) == ("postgresql-advisory", "database",
                                                                                "ok")
        line = next(r.getMessage() for r in caplog.records if "database engine ferretdb" in r.getMessage())
        assert "PostgreSQL advisory lock (scope database" in line and "PostgreSQL system " in line
        assert live.session(OPERATOR).post("/machines", json={"hostname": "a1", "state": "idle"}).status_code == 201
    finally:
        stop(live)


def test_two_spellings_of_one_server_are_one_lock(localdb, users_file):
    """The issue's third row: 127.0.0.1 and localhost used to name two lock files, so two locks."""
    dbname = f"test_lock_{uuid.uuid4().hex[:10]}"
    spelled = [localdb.uri, localdb.uri.replace("127.0.0.1", "localhost")]
    servers = [LiveServer({"MONGO_URI": uri, "MONGO_DBNAME": dbname, "USERS_FILE": users_file}) for uri in spelled]
    try:
        engines = [s.app.extensions["rm_engine"].get() for s in servers]
        assert engines[0].lock.key == engines[1].lock.key
    finally:
        for s in servers:
            s.stop()
        with pymongo.MongoClient(localdb.uri) as client:
            client.drop_database(dbname)


def assert_writes_refused(live, retry_after):
    """Every write method answers 503 in our error shape with Retry-After; reads are served; nothing stored."""
    with live.session(OPERATOR) as s:
        for method, path, body in (("POST", "/machines", {"hostname": "r1", "state": "idle"}),
                                   ("PATCH", "/machines/r1", {"owner": "x"}), ("DELETE", "/machines/r1", None),
                                   ("POST", "/reservations", {"count": 1})):
            r = s.request(method, path, json=body, headers={"If-Match": "x"})
            assert r.status_code == 503, (method, path, r.text)
            assert r.headers["Retry-After"] == retry_after
            assert r.json()["_status"] == "ERR" and r.json()["_error"]["code"] == 503
        assert s.get("/machines").status_code == 200
    assert live.db.machines.count_documents({}) == 0


def test_a_postgres_url_to_another_database_refuses_writes_and_names_the_fix(localdb, users_file, caplog):
    wrong = localdb.postgres_url.replace("/ferretdb?", "/postgres?")
    live = serve(localdb, users_file, POSTGRES_URL=wrong)
    try:
        assert_writes_refused(live, "60")
        health = live.session().get("/healthz")
        assert health.status_code == 200
        assert (health.json()["status"], health.json()["write_lock"]) == ("degraded", "none")
        assert health.json()["writes"].startswith("refused: RM_POSTGRES_URL leads to PostgreSQL system ")
        refusal = next(r for r in caplog.records if "writes REFUSED" in r.getMessage())
        assert refusal.levelno == logging.ERROR
        assert "point it at the PostgreSQL database FerretDB uses" in refusal.getMessage()
    finally:
        stop(live)


@pytest.mark.parametrize("url", ["not a url", "dbname=ferretdb nonsense=1"])
def test_a_malformed_postgres_url_refuses_writes(localdb, users_file, url):
    live = serve(localdb, users_file, POSTGRES_URL=url)
    try:
        assert_writes_refused(live, "60")
    finally:
        stop(live)


def test_a_role_that_may_not_read_ferretdbs_tables_refuses_writes(localdb, users_file, caplog):
    with psycopg.connect(localdb.postgres_url, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = 'rm_test_outsider'").fetchone():
            conn.execute("CREATE ROLE rm_test_outsider LOGIN")
    live = serve(localdb, users_file, POSTGRES_URL=localdb.postgres_url.replace("postgres@", "rm_test_outsider@"))
    try:
        assert_writes_refused(live, "60")
        message = next(r.getMessage() for r in caplog.records if "writes REFUSED" in r.getMessage())
        assert "may not read FerretDB's tables" in message and "connect as the role FerretDB uses" in message
    finally:
        stop(live)


def test_ferretdb_whose_storage_nobody_told_us_refuses_writes(localdb, users_file, caplog):
    with pymongo.MongoClient(localdb.uri) as client:
        record = client[storage.LAUNCHER_DB][storage.LAUNCHER_COLLECTION]
        saved = record.find_one_and_delete({"_id": storage.LAUNCHER_ID})
        live = None
        try:
            live = serve(localdb, users_file)
            assert_writes_refused(live, "60")
            message = next(r.getMessage() for r in caplog.records if "writes REFUSED" in r.getMessage())
            assert "set RM_POSTGRES_URL to the PostgreSQL database FerretDB uses" in message
            # Asked again at every write: a launcher that records its storage late (the database started
            # after the API) is found, and the next write is served under the lock.
            record.insert_one(saved)
            saved = None
            r = live.session(OPERATOR).post("/machines", json={"hostname": "late", "state": "idle"})
            assert r.status_code == 201, r.text
            assert live.session().get("/healthz").json()["write_lock"] == "postgresql-advisory"
        finally:
            if saved is not None:
                record.insert_one(saved)
            if live is not None:
                stop(live)


def test_an_unreachable_lock_database_is_503_until_it_answers(localdb, users_file, monkeypatch):
    monkeypatch.setattr(atomic, "RETRY_SECONDS", 0.0)
    short = tempfile.mkdtemp(prefix="rm-l-")  # a socket's path must stay under 107 bytes
    link = pathlib.Path(short, "pg")  # nothing there yet: the PostgreSQL cannot be reached
    url = localdb.postgres_url.split("?")[0] + f"?host={link}&port=5432"
    live = serve(localdb, users_file, POSTGRES_URL=url)
    try:
        assert_writes_refused(live, "5")
        assert live.session().get("/healthz").json()["write_lock"] == "pending"
        link.symlink_to(localdb.postgres.socket_dir)  # now it answers: the next write proves it and takes the lock
        r = live.session(OPERATOR).post("/machines", json={"hostname": "a1", "state": "idle"})
        assert r.status_code == 201, r.text
        assert live.session().get("/healthz").json()["write_lock"] == "postgresql-advisory"
    finally:
        stop(live)
        shutil.rmtree(short)


def test_serialisation_off_is_said_and_takes_no_lock(localdb, users_file):
    live = serve(localdb, users_file, WRITE_SERIALISATION="off")
    try:
        body = live.session().get("/healthz").json()
        assert (body["writes"], body["write_lock"]) == ("NOT atomic (serialisation switched off)", "none")
    finally:
        stop(live)


def test_host_mode_on_postgresql_is_a_flock_keyed_by_the_storage_not_the_uri(localdb, users_file, tmp_path):
    live = serve(localdb, users_file, WRITE_SERIALISATION="host", WRITE_LOCK_DIR=str(tmp_path))
    try:
        body = live.session().get("/healthz").json()
        assert (body["write_lock"], body["write_lock_scope"]) == ("flock", "host")
        engine = live.app.extensions["rm_engine"].get()
        assert engine.lock.path == atomic.lock_path(engine.storage.key, str(tmp_path))
    finally:
        stop(live)


@pytest.fixture(scope="module")
def sqlite_db(tmp_path_factory):
    """The embedded database over SQLite (its former default), for this module."""
    db = LocalDB(str(tmp_path_factory.mktemp("sqlite")), engine="sqlite")
    db.start()
    yield db
    db.stop()


def test_on_sqlite_the_lock_is_a_flock_of_the_database_file_whatever_the_lock_dir(sqlite_db, users_file, tmp_path):
    dbname = f"test_lock_{uuid.uuid4().hex[:10]}"
    servers = [LiveServer({"MONGO_URI": sqlite_db.uri, "MONGO_DBNAME": dbname, "USERS_FILE": users_file,
                           "WRITE_LOCK_DIR": str(tmp_path / f"host{i}")}) for i in range(2)]
    try:
        for live in servers:
            body = live.session().get("/healthz").json()
            assert (body["write_lock"], body["write_lock_scope"]) == ("flock", "host")
            assert live.app.extensions["rm_engine"].get().lock.path == os.path.join(
                os.path.realpath(sqlite_db.data_dir), f"{dbname}.sqlite")
        # Two servers, two lock directories: still one lock, so one If-Match wins once.
        with servers[0].session(OPERATOR) as s:
            for i in range(8):
                assert s.post("/machines", json={"hostname": f"s{i}", "state": "idle"}).status_code == 201
            etags = {f"s{i}": s.get(f"/machines/s{i}").json()["_etag"] for i in range(8)}

        def patch(i):
            with servers[i % 2].session(OPERATOR) as s:
                return s.patch(f"/machines/s{i // 2}", json={"tags": {"by": i % 2}},
                               headers={"If-Match": etags[f"s{i // 2}"]}).status_code

        codes = run_together(8, patch)
        assert all(sorted(codes[k:k + 2]) == [200, 412] for k in range(0, 8, 2)), codes
    finally:
        for live in servers:
            live.stop()
        with pymongo.MongoClient(sqlite_db.uri) as client:
            client.drop_database(dbname)


def test_a_sqlite_dir_that_is_not_ferretdbs_refuses_writes(sqlite_db, users_file, tmp_path):
    live = serve(sqlite_db, users_file, SQLITE_DIR=str(tmp_path))
    try:
        assert_writes_refused(live, "60")
        assert "RM_SQLITE_DIR" in live.session().get("/healthz").json()["writes"]
    finally:
        stop(live)
