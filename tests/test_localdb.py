"""The embedded database: started, answering, stopped, and nothing left behind after a stop, Ctrl-C,
SIGKILL of its launcher or a crash; SQLite data of the former default carried over."""

import glob
import os
import signal
import socket
import subprocess
import sys
import textwrap

import psutil
import pymongo
import pytest

from resource_manager.localdb import LocalDB, LocalDBError, build
from resource_manager.localdb.postgres import SYSTEM_USER

from .support import free_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for our purposes; /proc says which.
    with open(f"/proc/{pid}/stat") as fh:
        return fh.read().split()[2] != "Z"


def server_pids(db):
    """Every process of a running LocalDB: FerretDB, the postmaster and its backends."""
    postmaster = psutil.Process(db.postgres.process.pid)
    return [db.process.pid, postmaster.pid] + [p.pid for p in postmaster.children(recursive=True)]


def processes_on(data_dir):
    """Processes whose command line names `data_dir` (FerretDB's -data-dir or postgres -D)."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        if any(data_dir in arg for arg in proc.info["cmdline"] or []) and proc.pid != os.getpid():
            found.append(proc)
    return [p for p in found if p.status() != psutil.STATUS_ZOMBIE]


def assert_gone(pids, timeout=30):
    """Wait for `pids` to exit (they are told to by now) and fail naming any still there."""
    procs = []
    for pid in pids:
        try:
            procs.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            pass
    _, still = psutil.wait_procs(procs, timeout=timeout)
    assert [p for p in still if p.status() != psutil.STATUS_ZOMBIE] == []


def test_start_serves_on_loopback_and_stop_leaves_no_process(tmp_path):
    db = LocalDB(str(tmp_path / "data"))
    uri = db.start()
    assert uri.startswith("mongodb://127.0.0.1:")
    assert db.engine == "postgresql"
    pids = server_pids(db)
    assert len(pids) >= 3  # FerretDB, the postmaster, its background workers
    postmaster = psutil.Process(db.postgres.process.pid)
    # PostgreSQL has no TCP listener, only its socket; under root it runs as the system user.
    assert [c for c in postmaster.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN] == []
    assert os.path.exists(os.path.join(db.postgres.socket_dir, ".s.PGSQL.5432"))
    if os.geteuid() == 0:
        assert postmaster.username() == SYSTEM_USER
        assert os.stat(db.postgres.pgdata).st_uid == postmaster.uids().real
    assert psutil.Process(db.process.pid).environ()["DO_NOT_TRACK"] == "1"
    with pymongo.MongoClient(uri) as client:
        client.probe.things.insert_one({"_id": 1})
        assert client.probe.things.count_documents({}) == 1
    db.stop()
    assert not any(alive(pid) for pid in pids)
    assert processes_on(str(tmp_path / "data")) == []


def test_data_survives_a_restart_on_the_same_port_and_a_second_launcher_is_refused(tmp_path):
    port = free_port()
    with LocalDB(str(tmp_path / "data"), port=port) as db:
        with pymongo.MongoClient(db.uri) as client:
            client.probe.things.insert_one({"_id": "kept"})
        with pytest.raises(LocalDBError, match="in use by another"):
            LocalDB(str(tmp_path / "data")).start()
        with pymongo.MongoClient(db.uri) as client:  # the first one is untouched
            assert client.admin.command("ping")["ok"] == 1
    with LocalDB(str(tmp_path / "data"), port=port) as db:
        assert db.port == port
        with pymongo.MongoClient(db.uri) as client:
            assert client.probe.things.find_one({"_id": "kept"}) == {"_id": "kept"}


def test_a_crash_leaves_a_stale_postmaster_pid_that_does_not_block_the_next_start(tmp_path):
    db = LocalDB(str(tmp_path / "data"))
    db.start()
    with pymongo.MongoClient(db.uri) as client:
        client.probe.things.insert_one({"_id": "kept"})
    pids = server_pids(db)
    db.kill()
    assert_gone(pids)
    assert os.path.exists(tmp_path / "data" / "pg" / "postmaster.pid")
    with LocalDB(str(tmp_path / "data")) as again, pymongo.MongoClient(again.uri) as client:
        assert client.probe.things.find_one({"_id": "kept"}) == {"_id": "kept"}


def test_a_postmaster_pid_naming_an_unrelated_live_process_does_not_block_the_start(tmp_path):
    with LocalDB(str(tmp_path / "data")):
        pass
    other = subprocess.Popen(["sleep", "300"])  # a live process whose pid PostgreSQL would take for a server
    try:
        pidfile = tmp_path / "data" / "pg" / "postmaster.pid"
        pidfile.write_text(f"{other.pid}\n{tmp_path / 'data' / 'pg'}\n0\n5432\n\n\n0 0\nready\n")
        if os.geteuid() == 0:
            os.chown(pidfile, *[getattr(os.stat(pidfile.parent), a) for a in ("st_uid", "st_gid")])
        with LocalDB(str(tmp_path / "data")) as db, pymongo.MongoClient(db.uri) as client:
            assert client.admin.command("ping")["ok"] == 1
    finally:
        other.kill()
        other.wait()


LAUNCHER = textwrap.dedent("""
    import sys
    from resource_manager.localdb import LocalDB
    db = LocalDB(sys.argv[1])
    db.start()
    print(db.process.pid, db.postgres.process.pid, flush=True)
    sys.stdin.read()
""")


def test_sigkill_of_the_launcher_takes_the_database_with_it(tmp_path):
    data = str(tmp_path / "data")
    with subprocess.Popen([sys.executable, "-c", LAUNCHER, data], cwd=ROOT, stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, text=True) as launcher:
        try:
            ferretdb, postmaster = map(int, launcher.stdout.readline().split())
            pids = [ferretdb, postmaster] + [p.pid for p in psutil.Process(postmaster).children(recursive=True)]
        finally:
            launcher.kill()
    assert_gone(pids)
    assert processes_on(data) == []
    with LocalDB(data) as db, pymongo.MongoClient(db.uri) as client:  # and the next start is not blocked
        assert client.admin.command("ping")["ok"] == 1


def test_ctrl_c_of_the_foreground_runner_stops_everything(tmp_path):
    data = str(tmp_path / "data")
    runner = subprocess.Popen([sys.executable, "-m", "resource_manager.localdb", "--data-dir", data,
                               "--port", str(free_port())], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        ready = runner.stdout.readline()
        assert ready.startswith("ready mongodb://127.0.0.1:"), ready
        pids = [p.pid for p in psutil.Process(runner.pid).children(recursive=True)]
        assert len(pids) >= 3
    finally:
        runner.send_signal(signal.SIGINT)
        runner.communicate(timeout=60)
    assert runner.returncode == 0
    assert_gone(pids)
    assert processes_on(data) == []


def test_port_in_use_is_a_clear_error_and_leaves_nothing(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        db = LocalDB(str(tmp_path / "data"), port=sock.getsockname()[1])
        with pytest.raises(LocalDBError, match="did not start"):
            db.start(timeout=20)
        assert db.process is None and db.postgres is None
    assert_gone([p.pid for p in processes_on(str(tmp_path / "data"))])


def test_server_refuses_a_non_loopback_address(tmp_path):
    result = subprocess.run([build(), "-listen", "0.0.0.0:0", "-handler", "sqlite", "-data-dir", str(tmp_path)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    assert "loopback" in result.stderr


def test_indexes_get_a_gin_twin_that_serves_pushed_down_equality(tmp_path):
    with LocalDB(str(tmp_path / "data")) as db, pymongo.MongoClient(db.uri) as client:
        machines = client.probe.machines
        machines.create_index("hostname", unique=True, name="hostname_unique")
        machines.insert_many([{"hostname": f"h{i}"} for i in range(200)])
        found = db.postgres._psql("ferretdb", "SELECT indexdef FROM pg_indexes WHERE schemaname = 'probe'")
        gin = [line for line in found.splitlines() if "USING gin" in line]
        assert sorted("'hostname'" in line for line in gin) == [False, True]  # _id and hostname
        table = gin[0].split(" ON probe.")[1].split()[0]
        plan = db.postgres._psql("ferretdb", f"SET enable_seqscan = off; EXPLAIN SELECT _jsonb FROM probe.{table} "
                                             "WHERE _jsonb -> 'hostname' @> '\"h7\"'")
        assert "rm_gin_" in plan
        machines.drop_index("hostname_unique")
        found = db.postgres._psql("ferretdb", "SELECT indexdef FROM pg_indexes WHERE schemaname = 'probe'")
        assert "'hostname'" not in found


def test_sqlite_data_of_the_former_default_is_migrated_with_its_indexes(tmp_path):
    data = str(tmp_path / "data")
    with LocalDB(data, engine="sqlite") as old, pymongo.MongoClient(old.uri) as client:
        client.rm.machines.create_index("hostname", unique=True, name="hostname_unique")
        client.rm.machines.insert_many([{"hostname": f"h{i}", "state": "idle", "tags": {"n": i}} for i in range(1200)])
        client.rm.empty.insert_one({"_id": "x"})
        client.rm.empty.delete_one({"_id": "x"})
        client.other.things.insert_one({"_id": "kept"})
    assert glob.glob(os.path.join(data, "*.sqlite"))
    with LocalDB(data) as db, pymongo.MongoClient(db.uri) as client:
        assert client.rm.machines.count_documents({}) == 1200
        assert client.rm.machines.find_one({"hostname": "h42"}, {"_id": 0}) == {
            "hostname": "h42", "state": "idle", "tags": {"n": 42}}
        assert client.rm.machines.index_information()["hostname_unique"]["unique"] is True
        with pytest.raises(pymongo.errors.DuplicateKeyError):
            client.rm.machines.insert_one({"hostname": "h1"})
        assert "empty" in client.rm.list_collection_names()
        assert client.other.things.find_one() == {"_id": "kept"}
    assert glob.glob(os.path.join(data, "*.sqlite")) == []
    kept = glob.glob(os.path.join(data, "sqlite-migrated-*", "rm.sqlite"))
    assert len(kept) == 1
    with LocalDB(data) as db, pymongo.MongoClient(db.uri) as client:  # nothing migrated twice
        assert client.rm.machines.count_documents({}) == 1200


def test_a_deep_data_directory_keeps_its_socket_address_across_restarts(tmp_path):
    """The write lock's PostgreSQL URL (the launcher's record, proven by running servers) stays valid."""
    deep = tmp_path / ("d" * 60) / "data"
    with LocalDB(str(deep)) as db:
        first, socket_dir = db.postgres_url, db.postgres.socket_dir
        assert socket_dir != str(deep / "pg")  # too long for a socket path: a private directory
    assert not os.path.exists(socket_dir)  # removed at stop, made again at the next start
    with LocalDB(str(deep)) as db:
        assert db.postgres_url == first
