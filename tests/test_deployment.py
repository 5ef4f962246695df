"""Deployment: supervisord.conf from a fresh clone brings up the database, the API and the sweep; rm-sweep --every.

The supervisord test lays out a fresh clone (the files git tracks), with what `make install` adds
to it: the virtualenv (the suite's own, linked) and var/log (made by the Makefile's own rule).
The embedded database's binary is linked from this checkout's build, so Go need not build it again.
"""

import datetime
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import psutil
import pytest
import requests

from .support import OPERATOR, free_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)
RM_SWEEP = [sys.executable, "-m", "resource_manager.admin.sweep"]  # what the rm-sweep script runs
LONG_AGO = datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc)


def fresh_clone(target):
    """Copy the files git tracks into `target`, as `git clone` would lay them out; return its path."""
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for name in filter(None, tracked.decode().split("\0")):
        source = os.path.join(ROOT, name)
        if os.path.isfile(source):
            os.makedirs(os.path.dirname(os.path.join(target, name)), exist_ok=True)
            shutil.copy2(source, os.path.join(target, name))
    return target


def read(path):
    with open(path, encoding="utf-8") as fh:
        return fh.read()


def wait_for(condition, what, timeout=180):
    deadline = time.monotonic() + timeout
    while True:
        found = condition()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def processes_of(clone):
    """Return the processes whose command line or working directory is inside the clone."""
    found = []
    for process in psutil.process_iter(["cmdline", "cwd"]):
        info = process.info
        if clone in " ".join(info["cmdline"] or ()) or (info["cwd"] or "").startswith(clone):
            found.append(process)
    return found


@pytest.fixture
def short_dir():
    """A directory with a short path: supervisord's control socket (var/supervisor.sock) must fit in the
    108 bytes of a Unix socket's path, which pytest's temporary directories under `make test` exceed."""
    path = tempfile.mkdtemp(prefix="rm-clone-", dir="/tmp")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_supervisord_from_a_fresh_clone_runs_database_api_and_sweep(short_dir):
    clone = fresh_clone(os.path.join(short_dir, "checkout"))
    os.symlink(os.path.dirname(BIN), os.path.join(clone, ".venv"))  # make install's virtualenv
    build = os.path.join(ROOT, "resource_manager", "localdb", ".build")
    os.symlink(build, os.path.join(clone, "resource_manager", "localdb", ".build"))
    assert not os.path.exists(os.path.join(clone, "var"))
    made = subprocess.run(["make", "var/log"], cwd=clone, capture_output=True, text=True)  # make install's rule
    assert made.returncode == 0 and os.path.isdir(os.path.join(clone, "var", "log")), made.stderr
    api_port, db_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RM_") and k != "MONGO_URI"}
    env.update(RM_BIND=f"127.0.0.1:{api_port}", RM_LOCALDB_PORT=str(db_port), RM_WORKERS="1", RM_THREADS="2",
               RM_SWEEP_EVERY="1", NO_PROXY="127.0.0.1,localhost")
    conf = os.path.join(clone, "supervisord.conf")
    started = subprocess.run([os.path.join(BIN, "supervisord"), "-c", conf], cwd=clone, env=env,
                             capture_output=True, text=True, timeout=60)
    assert started.returncode == 0, started.stdout + started.stderr
    pidfile = os.path.join(clone, "var", "supervisord.pid")
    supervisord = int(wait_for(lambda: os.path.exists(pidfile) and read(pidfile).strip(), "the pid file"))
    ctl = [os.path.join(BIN, "supervisorctl"), "-c", conf]
    try:
        url = f"http://127.0.0.1:{api_port}"

        def healthy():
            try:
                response = requests.get(url + "/healthz", timeout=5)
            except requests.RequestException:
                return None
            return response.status_code == 200 and response.json()

        health = wait_for(healthy, "/healthz to answer 200")
        assert health["database"] == "up" and health["engine"] == "ferretdb"
        # The API's database is the localdb program's, on the port asked for (not 27017).
        assert requests.post(url + "/machines", json={"hostname": "h1", "state": "idle"}, auth=OPERATOR,
                             timeout=10).status_code == 401  # no users file: writes refused, as documented
        status = subprocess.run(ctl + ["status"], env=env, capture_output=True, text=True, timeout=60).stdout
        assert [line.split()[:2] for line in status.splitlines()] == [
            ["localdb", "RUNNING"], ["resource-manager", "RUNNING"], ["sweep", "RUNNING"]], status
        # Its own port, its own data directory.
        assert f"ready mongodb://127.0.0.1:{db_port}/" in read(os.path.join(clone, "var", "log", "localdb.log"))
        assert os.path.isdir(os.path.join(clone, "var", "db", "pg"))

        def swept():
            return [json.loads(line) for line in read(sweep_log).splitlines() if line.startswith("{")]

        sweep_log = os.path.join(clone, "var", "log", "sweep.log")
        sweeps = wait_for(lambda: os.path.exists(sweep_log) and swept(), "a sweep")
        assert {"expired", "repaired", "released", "pxe_failed"} <= set(sweeps[0])
    finally:
        stopped = subprocess.run(ctl + ["shutdown"], env=env, capture_output=True, text=True, timeout=120)
        if psutil.pid_exists(supervisord):
            try:
                psutil.Process(supervisord).wait(120)
            except psutil.TimeoutExpired:
                os.kill(supervisord, signal.SIGKILL)
                raise
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    # Everything it started stopped with it: the database (FerretDB, PostgreSQL), gunicorn, the sweep.
    left = wait_for(lambda: not processes_of(clone) or None, "every process to stop", timeout=60)
    assert left
    assert "rm-sweep: stopped" in read(os.path.join(clone, "var", "log", "sweep.log"))


def test_rm_sweep_every_sweeps_until_sigterm(server, operator, dbname, clock):
    # A reservation whose lease ran out: the loop's sweep expires it, then it goes on until told to stop.
    # (The server is on a clock of its own, without the upkeep ticker that would end the lease first.)
    assert operator.post("/machines", json={"hostname": "m1", "state": "idle"}).status_code == 201
    res = operator.post("/reservations", json={"count": 1, "lease_seconds": 60}).json()
    server.db.reservations.update_one({"_id": res["_id"]}, {"$set": {"expires": LONG_AGO, "ends_at": LONG_AGO}})
    env = dict({k: v for k, v in os.environ.items() if not k.startswith("RM_")},
               MONGO_URI=server.app.config["MONGO_URI"], RM_MONGO_DBNAME=server.db.name, DO_NOT_TRACK="1")
    process = subprocess.Popen(RM_SWEEP + ["--every", "0.2"], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        lines = [json.loads(process.stdout.readline()) for _ in range(3)]  # three sweeps, a fifth of a second apart
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert lines[0]["expired"] == 1 and lines[1]["expired"] == 0 and "at" in lines[0]
    assert server.db.reservations.find_one({"_id": res["_id"]})["state"] == "expired"
    assert "sweeping every 0.2 s until stopped" in err and err.rstrip().endswith("rm-sweep: stopped")


@pytest.mark.parametrize("every", ["0", "-1", "soon"])
def test_rm_sweep_every_wants_a_positive_number(every):
    done = subprocess.run(RM_SWEEP + ["--every", every], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "--every" in done.stderr
