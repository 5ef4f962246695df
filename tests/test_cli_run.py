"""`rmctl run`: reserve, run a command, release. Real processes, real signals, the real server over HTTP.

The command is tests/run_child.py: it reports what it got, prints "ready" and waits for its
instruction on stdin, so each test acts while the command runs, never on a guess of time. The
figures of the timed paths (a signal to rmctl -> the machines idle) are printed (`-s` shows them).
"""

import os
import signal
import subprocess
import sys
import time

import pytest

from .cli_helpers import ROOT, run_cli
from .run_support import CHILD, Run, argv, await_end, environment
from .support import PASSWORDS


@pytest.fixture
def machines(operator):
    """Two idle machines with tags, m1 and m2."""
    for name, arch in (("m1", "x86_64"), ("m2", "aarch64")):
        body = {"hostname": name, "state": "idle", "tags": {"arch": arch, "memory": 17179869184}}
        assert operator.post("/machines", json=body).status_code == 201
    return ["m1", "m2"]


def idle(server, names):
    return all(server.db.machines.find_one({"hostname": n})["state"] == "idle" for n in names)


def only_reservation(server):
    (res,) = list(server.db.reservations.find({}))
    return res


@pytest.mark.parametrize(("instruction", "status"), [("exit 0", 0), ("exit 3", 3), ("kill SIGKILL", 128 + 9)])
def test_the_command_gets_its_machines_and_rmctl_exits_with_its_status_then_releases(
        server, machines, tmp_path, instruction, status):
    run = Run(server.url, tmp_path, "--count", "2", "--job-id", "build-7", "--heartbeat", "30s")
    report = run.ready()
    held = only_reservation(server)
    assert held["state"] == "active" and held["heartbeat_seconds"] == 30 and held["job_id"] == "build-7"
    assert report["RM_RESERVATION_ID"] == held["_id"]
    assert report["RM_HOSTS"] == "m1 m2" and report["hosts_file"] == "m1\nm2\n"
    assert [(m["hostname"], m["tags"]["arch"], m["reservation"]) for m in report["machines"]] == [
        ("m1", "x86_64", held["_id"]), ("m2", "aarch64", held["_id"])]
    # A child of rmctl, in rmctl's process group (which is ours: nobody made a new one).
    assert report["ppid"] == run.proc.pid and report["pgid"] == os.getpgrp()
    directory = os.path.dirname(report["RM_HOSTS_FILE"])
    assert oct(os.stat(directory).st_mode & 0o777) == "0o700"
    run.tell(instruction)
    code, out, err = run.finish()
    assert code == status, err
    assert out == "ready\n"
    assert err.splitlines() == [f"rmctl: holding m1 m2 (reservation {held['_id']}, heartbeat 30 s)",
                                f"rmctl: released m1 m2 (reservation {held['_id']})"]
    assert not os.path.exists(directory)  # the files went with the run
    assert server.db.reservations.find_one({"_id": held["_id"]})["state"] == "released"
    assert idle(server, machines)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_a_signal_to_rmctl_goes_to_the_command_then_the_machines_are_released(
        server, machines, tmp_path, anon, signum):
    run = Run(server.url, tmp_path, "--count", "2")
    run.ready()
    rid = only_reservation(server)["_id"]
    started = time.monotonic()
    run.proc.send_signal(signum)
    res, _ = await_end(anon, rid)
    took = time.monotonic() - started
    code, _out, err = run.finish()
    print(f"\n{signum.name} to rmctl -> reservation released: {took:.3f} s")
    assert code == 128 + signum, err
    assert run.signals() == [signum.name]  # once
    assert res["state"] == "released" and idle(server, machines)
    assert took < 2.0


def test_ctrl_c_in_a_terminal_reaches_the_command_once(server, machines, tmp_path):
    """rmctl and the command share the terminal's foreground group: the kernel's SIGINT is not sent twice."""
    import pty

    master, slave = pty.openpty()
    # setsid --ctty: a session of its own whose controlling terminal is the pty, rmctl its foreground group.
    command = ["setsid", "--ctty", *argv(tmp_path, child_options=["--survive-int"])]
    proc = subprocess.Popen(command, stdin=slave, stdout=slave, stderr=slave, env=environment(server.url), cwd=ROOT)
    run = Run.__new__(Run)
    run.out_dir = str(tmp_path)
    os.close(slave)
    seen = b""
    try:
        seen = _read_until(master, b"ready", proc)
        os.write(master, b"\x03")  # Ctrl-C: SIGINT to the foreground process group, rmctl and the command
        seen += _read_until(master, b"", proc, until=lambda: run.signals() == ["SIGINT"])
        # Then a SIGTERM sent to rmctl by a process: passed on. Had rmctl passed the SIGINT on, the
        # command would have had it before this one (pending signals go lowest number first).
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
        seen += _drain(master)
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    assert code == 128 + signal.SIGTERM, seen
    assert run.signals() == ["SIGINT", "SIGTERM"]
    assert only_reservation(server)["state"] == "released" and idle(server, ["m1"])


def _read_until(fd, marker, proc, until=None, timeout=60):
    import select

    got = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (marker and marker in got) or (until is not None and until()):
            return got
        ready, _, _ = select.select([fd], [], [], 0.05)
        if ready:
            try:
                got += os.read(fd, 4096)
            except OSError:
                break
        elif proc.poll() is not None:
            break
    raise AssertionError(f"not seen: {marker!r}; got {got!r}")


def _drain(fd):
    import select

    got = b""
    while select.select([fd], [], [], 0.2)[0]:
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            break
        if not chunk:
            break
        got += chunk
    return got


def test_it_waits_in_line_then_runs_once_granted(server, operator, machines, tmp_path):
    holder = operator.post("/reservations", json={"count": 2, "job_id": "holder"}).json()
    run = Run(server.url, tmp_path, "--count", "1", "--wait", "1m", "--job-id", "waiter")
    deadline = time.monotonic() + 30
    while server.db.reservations.find_one({"job_id": "waiter", "state": "queued"}) is None:
        assert time.monotonic() < deadline and run.proc.poll() is None
        time.sleep(0.05)
    assert not os.path.exists(os.path.join(tmp_path, "report.json"))  # nothing runs before the grant
    assert operator.delete(f"/reservations/{holder['_id']}").status_code == 200
    report = run.ready()
    assert report["RM_HOSTS"] == "m1"
    run.tell("exit 0")
    code, _, err = run.finish()
    assert code == 0, err
    waiter = server.db.reservations.find_one({"job_id": "waiter"})
    assert waiter["state"] == "released" and waiter["granted_at"] is not None


def test_sigterm_while_waiting_in_line_cancels_the_request(server, operator, machines, tmp_path):
    operator.post("/reservations", json={"count": 2, "job_id": "holder"})
    run = Run(server.url, tmp_path, "--count", "1", "--wait", "1m", "--job-id", "impatient")
    deadline = time.monotonic() + 30
    while (queued := server.db.reservations.find_one({"job_id": "impatient", "state": "queued"})) is None:
        assert time.monotonic() < deadline and run.proc.poll() is None
        time.sleep(0.05)
    run.proc.send_signal(signal.SIGTERM)
    code, out, err = run.finish()
    assert (code, out) == (128 + signal.SIGTERM, "")
    assert err == f"rmctl: SIGTERM: interrupted: queued reservation {queued['_id']} cancelled\n"
    assert server.db.reservations.find_one({"_id": queued["_id"]})["state"] == "cancelled"


def test_keep_on_failure_keeps_the_machines_for_a_post_mortem(server, machines, tmp_path, anon):
    run = Run(server.url, tmp_path, "--count", "2", "--keep-on-failure", "4h", "--heartbeat", "20s")
    run.ready()
    run.tell("exit 3")
    code, _, err = run.finish()
    assert code == 3, err
    kept = only_reservation(server)
    assert kept["state"] == "active" and kept["heartbeat_seconds"] is None and kept["heartbeat_due"] is None
    # Exactly four hours from the moment it was kept, and then it expires by itself.
    assert abs((kept["expires"] - kept["_updated"]).total_seconds() - 4 * 3600) < 2
    command = f"{sys.executable} {CHILD} {tmp_path}"
    history = anon.get(f"/reservations/{kept['_id']}/history").json()["_items"]
    assert history[-1]["action"] == "extended"
    assert history[-1]["reason"] == f"kept for post-mortem: {command} exited 3"
    last = err.splitlines()[-1]
    assert last.startswith(f"rmctl: kept m1 m2 (reservation {kept['_id']}) until 20")
    assert last.endswith(f"for a post-mortem: {sys.executable} exited 3; then it expires, or: "
                         f"rmctl release {kept['_id']}")
    assert not idle(server, machines)


def test_keep_on_failure_releases_after_a_success(server, machines, tmp_path):
    run = Run(server.url, tmp_path, "--keep-on-failure", "4h")
    run.ready()
    run.tell("exit 0")
    assert run.finish()[0] == 0
    assert only_reservation(server)["state"] == "released" and idle(server, machines)


def test_a_reservation_ended_under_the_command_stops_it(server, operator, machines, tmp_path):
    run = Run(server.url, tmp_path, "--heartbeat", "6s")
    run.ready()
    rid = only_reservation(server)["_id"]
    assert operator.delete(f"/reservations/{rid}").status_code == 200  # someone else frees the machine
    code, _, err = run.finish()  # the next heartbeat (within 2 s) answers 409
    assert code == 128 + signal.SIGTERM, err
    assert run.signals() == ["SIGTERM"]
    assert err.splitlines()[-1] == (f"rmctl: reservation {rid} has ended: released; stopping {sys.executable} "
                                    f"(pid {run.report()['pid']}): its machines are no longer its own")


def test_when_reserving_fails_nothing_runs_and_rmctls_own_codes_apply(server, operator, machines, tmp_path):
    environ = {"RM_ENDPOINT": server.url, "RM_USERNAME": "operator", "RM_PASSWORD": PASSWORDS["operator"]}
    marker = tmp_path / "ran"
    touch = ["--", "touch", str(marker)]
    refused = run_cli("run", "--count", "3", *touch, environ=environ)
    assert refused.code == 4 and refused.err.count("\n") == 1
    assert "requested 3, but only 2 machines match the constraints (in any state): it can never be met" in refused.err
    operator.post("/reservations", json={"count": 2, "job_id": "holder"})
    late = run_cli("run", "--wait", "1s", *touch, environ=environ)
    assert late.code == 7 and "the wait of 1 s ran out" in late.err
    assert run_cli("run", environ=environ).code == 2
    assert run_cli("run", "--count", "0", *touch, environ=environ).code == 2
    both = run_cli("run", "--reservation", "res-x", "--count", "2", "--keep-on-failure", "1h", *touch,
                   environ=environ)
    assert both.code == 2 and "--count, --keep-on-failure apply when run makes one" in both.err
    assert run_cli("run", "--heartbeat", "soon", *touch, environ=environ).code == 2
    assert not marker.exists()
    assert "run exits with its command's status" in " ".join(run_cli("--help").out.split())


@pytest.mark.parametrize(("command", "status", "why"), [
    (["no-such-command-here"], 127, "command not found"), ([os.devnull], 126, "Permission denied")])
def test_a_command_that_cannot_start_exits_126_or_127_and_releases(server, machines, tmp_path, command, status,
                                                                  why):
    run = Run(server.url, tmp_path, command=command)
    code, _, err = run.finish()
    assert code == status and f"rmctl: cannot run {command[0]}: {why}\n" in err
    assert only_reservation(server)["state"] == "released" and idle(server, machines)


def test_run_on_a_reservation_made_beforehand_keeps_it(server, machines, tmp_path, anon):
    environ = {"RM_ENDPOINT": server.url, "RM_USERNAME": "operator", "RM_PASSWORD": PASSWORDS["operator"]}
    made = run_cli("reserve", "--count", "2", "--heartbeat", "10s", "--lease", "1h", "--format", "id",
                   environ=environ)
    rid = made.out.strip()
    assert made.code == 0 and rid.startswith("res-")
    before = server.db.reservations.find_one({"_id": rid})
    assert before["heartbeat_seconds"] == 10
    for step in ("deploy", "test"):
        out = tmp_path / step
        out.mkdir()
        run = Run(server.url, out, "--reservation", rid)
        assert run.ready()["RM_HOSTS"] == "m1 m2"
        run.tell("exit 0")
        code, _, err = run.finish()
        assert code == 0 and err.splitlines()[-1] == f"rmctl: holding m1 m2 (reservation {rid}, heartbeat 10 s)"
    after = server.db.reservations.find_one({"_id": rid})
    assert after["state"] == "active" and after["heartbeat_at"] > before["heartbeat_at"]  # kept alive, not released
    assert run_cli("release", rid, environ=environ).code == 0
    ended = run_cli("run", "--reservation", rid, "--", "true", environ=environ)
    assert ended.code == 4 and f"reservation {rid} has ended: released" in ended.err
