"""The pytest plugin (entry point pytest11): sessions of their own (pytester, in subprocesses) against the live server.

Sessions that pass, fail and are interrupted by a real SIGINT each end with the machines released;
a session whose tests use no fixture reserves nothing (it may not even reach a server).
"""

import os
import signal
import sys

import pytest

from .run_support import Lines
from .support import PASSWORDS

pytest_plugins = ["pytester"]
# The inner sessions load only what they need: the other plugins installed here cost seconds each start.
LEAN = ("-p", "no:schemathesis", "-p", "no:hypothesispytest", "-p", "no:anyio", "-p", "no:xdist",
        "-p", "no:cacheprovider")

USES_MACHINES = """
import json, os

def test_one(rm_machines):
    assert rm_machines["hostnames"] == ["m1", "m2"] and rm_machines["state"] == "active"
    assert [m["tags"]["arch"] for m in rm_machines["machines"]] == ["x86_64", "aarch64"]
    with open(os.environ["SEEN"], "a") as fh:
        fh.write(rm_machines["_id"] + "\\n")

def test_two(rm_machines):
    with open(os.environ["SEEN"], "a") as fh:
        fh.write(rm_machines["_id"] + "\\n")
    assert os.environ.get("FAIL") != "1"
"""


@pytest.fixture
def inner(server, operator, monkeypatch, tmp_path):
    """Two idle machines; the inner sessions' environment points at the live server as the operator."""
    for name, arch in (("m1", "x86_64"), ("m2", "aarch64")):
        body = {"hostname": name, "state": "idle", "tags": {"arch": arch}}
        assert operator.post("/machines", json=body).status_code == 201
    monkeypatch.setenv("RM_ENDPOINT", server.url)
    monkeypatch.setenv("RM_USERNAME", "operator")
    monkeypatch.setenv("RM_PASSWORD", PASSWORDS["operator"])
    monkeypatch.setenv("XDG_CONFIG_HOME", os.devnull)
    monkeypatch.setenv("SEEN", str(tmp_path / "seen"))
    return tmp_path / "seen"


def released_once(server, seen):
    ids = set(seen.read_text().split())
    (res,) = list(server.db.reservations.find({}))
    assert ids == {res["_id"]}  # one reservation for the whole session
    assert res["state"] == "released" and res["job_id"] == "build-9" and res["heartbeat_seconds"] == 30
    assert [m["state"] for m in server.db.machines.find({})] == ["idle", "idle"]


def test_a_passing_session_holds_the_machines_then_releases_them(pytester, server, inner):
    pytester.makepyfile(USES_MACHINES)
    result = pytester.runpytest_subprocess(*LEAN, "--rm-count", "2", "--rm-job-id", "build-9", "--rm-heartbeat", "30s")
    result.assert_outcomes(passed=2)
    released_once(server, inner)


def test_a_failing_session_releases_them_too(pytester, server, inner, monkeypatch):
    monkeypatch.setenv("FAIL", "1")
    pytester.makepyfile(USES_MACHINES)
    result = pytester.runpytest_subprocess(*LEAN, "--rm-count", "2", "--rm-job-id", "build-9", "--rm-heartbeat", "30s")
    result.assert_outcomes(passed=1, failed=1)
    released_once(server, inner)


def test_ctrl_c_in_a_session_releases_them(pytester, server, inner):
    pytester.makepyfile("""
        import os, sys, time

        def test_long(rm_machines):
            with open(os.environ["SEEN"], "a") as fh:
                fh.write(rm_machines["_id"] + "\\n")
            print("ready", flush=True)
            time.sleep(600)  # interrupted by the test
    """)
    proc = pytester.popen([sys.executable, "-m", "pytest", "-s", *LEAN, "--rm-count", "2",
                           "--rm-job-id", "build-9", "--rm-heartbeat", "30s"], stdin=None, text=True)
    out = Lines(proc.stdout)
    try:
        out.wait_for(lambda line: line.endswith("ready\n"))
        proc.send_signal(signal.SIGINT)
        code = proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        text = out.text()
        proc.stdout.close()
        proc.stderr.close()
    assert code == pytest.ExitCode.INTERRUPTED, text
    assert "KeyboardInterrupt" in text
    released_once(server, inner)


def test_a_session_whose_tests_use_no_fixture_reserves_nothing(pytester, server, inner, monkeypatch):
    monkeypatch.setenv("RM_ENDPOINT", "http://127.0.0.1:9")  # nothing listens: not one request may be sent
    pytester.makepyfile("def test_plain():\n    assert True\n")
    result = pytester.runpytest_subprocess(*LEAN, "--rm-count", "2", "--rm-job-id", "build-9")
    result.assert_outcomes(passed=1)
    assert server.db.reservations.count_documents({}) == 0


def test_machines_it_cannot_have_fail_the_tests_that_ask_in_one_line(pytester, server, inner):
    pytester.makepyfile(USES_MACHINES)
    result = pytester.runpytest_subprocess(*LEAN, "--rm-count", "3")
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines([f"*rm_machines: could not reserve 3 machine(s) at {server.url}: "
                                 "409 requested 3, but only 2 machines match the constraints (in any state): "
                                 "it can never be met"])
    assert server.db.reservations.count_documents({}) == 0
    bad = pytester.runpytest_subprocess(*LEAN, "--rm-where", "{nope")
    assert bad.ret == pytest.ExitCode.USAGE_ERROR
    bad.stderr.fnmatch_lines(["*--rm-where is not valid JSON*"])


def test_a_reservation_ended_under_the_session_stops_it(pytester, server, inner):
    pytester.makepyfile("""
        import os, time
        import requests

        def test_first(rm_machines, request):
            auth = (os.environ["RM_USERNAME"], os.environ["RM_PASSWORD"])
            url = os.environ["RM_ENDPOINT"] + "/reservations/" + rm_machines["_id"]
            assert requests.delete(url, auth=auth, timeout=30).status_code == 200  # someone frees them
            deadline = time.monotonic() + 30
            while not request.session.shouldfail:  # the next heartbeat (within 2 s) says so
                assert time.monotonic() < deadline
                time.sleep(0.05)

        def test_second(rm_machines):
            raise AssertionError("never run: the machines are no longer ours")
    """)
    result = pytester.runpytest_subprocess(*LEAN, "--rm-heartbeat", "6s")
    result.assert_outcomes(passed=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    (res,) = list(server.db.reservations.find({}))
    result.stdout.fnmatch_lines([f"*rm_machines: reservation {res['_id']} has ended: released*"])
