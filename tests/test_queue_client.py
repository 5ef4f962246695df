"""Waiting in line from the library and rmctl: reserve(wait=), reserve --wait, the queue listing.

Over real HTTP against the real server. What the waiting client sees is driven by the client's own
progress hook (called once it is queued): the test releases, interrupts or checks from there,
never by sleeping. The wait that runs out is the server's own (a wait of 1 s).
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from resource_manager.cli.status import ExitStatus
from resource_manager.clientlib.client import (
    ReservationCancelled,
    ReservationInterrupted,
    ResourceManagerClient,
    WaitTimedOut,
)

from .cli_helpers import run_cli, subprocess_env
from .support import OPERATOR, PASSWORDS
from .test_client_retry import DropAnswers


@pytest.fixture
def one_held(server, operator):
    """One machine, m0, held by the operator's reservation; return that reservation."""
    assert operator.post("/machines", json={"hostname": "m0", "state": "idle"}).status_code == 201
    held = operator.post("/reservations", json={"count": 1, "job_id": "holder"})
    assert held.status_code == 201, held.text
    return held.json()


def client(server, **options):
    return ResourceManagerClient("machines", server.url, *OPERATOR, environ={}, **options)


def release(operator, res):
    assert operator.delete(f"/reservations/{res['_id']}").status_code == 200


def test_reserve_with_a_wait_blocks_until_a_release_grants_it(server, operator, one_held):
    seen = []

    def progress(res):
        seen.append((res["state"], res["position"]))
        release(operator, one_held)  # the machine comes free while we wait

    res = client(server).reserve(1, job_id="waiter", lease_seconds=3600, wait=60, on_progress=progress)
    assert seen == [("queued", 1)]
    assert res["state"] == "active" and res["hostnames"] == ["m0"] and res["job_id"] == "waiter"
    assert res["expires"] is not None
    machine = server.db.machines.find_one({"hostname": "m0"})
    assert (machine["state"], machine["job_id"], machine["reservation"]) == ("in_use", "waiter", res["_id"])
    # Granted at once when machines are free: no wait, no progress.
    assert operator.post("/machines", json={"hostname": "m1", "state": "idle"}).status_code == 201
    assert client(server).reserve(1, wait=60, on_progress=seen.append)["hostnames"] == ["m1"]
    assert len(seen) == 1


def test_a_wait_that_runs_out_raises_and_leaves_nothing_reserved(server, one_held):
    with pytest.raises(WaitTimedOut) as caught:
        client(server).reserve(1, job_id="late", wait=1)
    assert caught.value.reservation["state"] == "timed_out"
    assert "for 1 machine was not granted: the wait of 1 s ran out" in str(caught.value)
    stored = server.db.reservations.find_one({"job_id": "late"})
    assert stored["state"] == "timed_out" and stored["hostnames"] == []
    assert server.db.machines.find_one({"hostname": "m0"})["job_id"] == "holder"


def test_ctrl_c_while_waiting_cancels_the_queued_request(server, operator, one_held):
    def interrupt(_res):
        raise KeyboardInterrupt

    with pytest.raises(ReservationInterrupted) as caught:
        client(server).reserve(1, job_id="impatient", wait=60, on_progress=interrupt)
    assert isinstance(caught.value, KeyboardInterrupt) and caught.value.cancelled
    stored = server.db.reservations.find_one({"job_id": "impatient"})
    assert caught.value.reservation_id == stored["_id"] and stored["state"] == "cancelled"
    # Nobody waits for it any more: the machine, once free, stays idle.
    release(operator, one_held)
    assert server.db.machines.find_one({"hostname": "m0"})["state"] == "idle"


def test_a_queued_request_cancelled_by_someone_else_raises(server, operator, one_held):
    def cancel(res):
        assert operator.delete(f"/reservations/{res['_id']}").json()["state"] == "cancelled"

    with pytest.raises(ReservationCancelled, match="was not granted: it was cancelled while it waited"):
        client(server).reserve(1, job_id="dropped", wait=60, on_progress=cancel)


def test_a_lost_202_is_asked_again_with_its_key_and_waits_in_the_same_place(server, operator, one_held):
    drop = server.wrap(DropAnswers("POST", "/reservations"))
    res = client(server).reserve(1, job_id="lost-202", wait=60, on_progress=lambda _r: release(operator, one_held))
    assert drop.calls("POST", "/reservations") == ["lost", 202]
    stored = list(server.db.reservations.find({"job_id": "lost-202"}))
    assert [r["_id"] for r in stored] == [res["_id"]] and res["state"] == "active" and res["hostnames"] == ["m0"]


# -- rmctl ------------------------------------------------------------------------------------------

@pytest.fixture
def environ(server):
    return {"RM_ENDPOINT": server.url, "RM_USERNAME": "operator", "RM_PASSWORD": PASSWORDS["operator"]}


def queued(server, job_id, timeout=30):
    """The reservation of `job_id` once it is queued (the CLI runs in another thread or process)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = server.db.reservations.find_one({"job_id": job_id, "state": "queued"})
        if found is not None:
            return found
        time.sleep(0.05)
    raise AssertionError(f"{job_id} was never queued")


def test_rmctl_reserve_wait_shows_its_place_on_a_terminal_and_prints_the_hostnames(server, operator, one_held,
                                                                                  environ):
    result = {}
    thread = threading.Thread(target=lambda: result.update(r=run_cli(
        "reserve", "--count", "1", "--wait", "30m", "--job-id", "cli-wait", "--format", "plain",
        environ=environ, tty=True)))
    thread.start()
    queued(server, "cli-wait")
    release(operator, one_held)
    thread.join(60)
    done = result["r"]
    assert (done.code, done.out) == (0, "m0\n"), done.err
    assert done.err.startswith("rmctl: waiting for 1 machine: place 1 in line (reservation res-")
    assert "Ctrl-C cancels" in done.err and done.err.splitlines()[-1].startswith("rmctl: granted after ")


def test_rmctl_reserve_wait_that_runs_out_exits_7_with_one_line(server, one_held, environ):
    done = run_cli("reserve", "--count", "1", "--wait", "1s", "--job-id", "cli-late", environ=environ)
    assert done.code == 7 and done.out == ""
    assert done.err.count("\n") == 1 and "was not granted: the wait of 1 s ran out" in done.err
    assert done.err.startswith("rmctl: reservation res-")
    bad = run_cli("reserve", "--count", "1", "--wait", "soon", environ=environ)
    assert bad.code == 2 and "--wait: expected a duration like 90s, 30m, 2h or 1d" in bad.err
    assert ExitStatus.NOT_GRANTED == 7
    assert "7 reserve --wait not granted (the wait ran out" in " ".join(run_cli("--help").out.split())


def test_ctrl_c_on_rmctl_reserve_wait_cancels_and_exits_130(server, one_held, environ):
    env = subprocess_env(**environ)
    proc = subprocess.Popen([sys.executable, "-m", "resource_manager.cli", "reserve", "--count", "1",
                             "--wait", "30m", "--job-id", "cli-ctrl-c"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=os.path.dirname(os.path.dirname(__file__)))
    try:
        res = queued(server, "cli-ctrl-c")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130 and out == ""
    assert err == f"rmctl: interrupted: queued reservation {res['_id']} cancelled\n"
    assert server.db.reservations.find_one({"_id": res["_id"]})["state"] == "cancelled"


def test_rmctl_reservations_state_queued_lists_the_queue_in_order(server, operator, one_held, environ):
    for job, where in (("first", {"hostname": "m0"}), ("second", None)):
        body = {"count": 1, "job_id": job, "wait_seconds": 600, **({"where": where} if where else {})}
        assert operator.post("/reservations", json=body).status_code == 202
    listed = json.loads(run_cli("reservations", "--state", "queued", "--format", "json", environ=environ).out)
    assert [(r["position"], r["job_id"]) for r in listed] == [(1, "first"), (2, "second")]
    assert listed[0]["where"] == {"hostname": "m0"} and listed[0]["queued_at"] and listed[0]["wait_until"]
    table = run_cli("reservations", "--state", "queued", environ=environ, tty=True)
    assert table.code == 0
    lines = [line for line in table.out.splitlines() if "first" in line or "second" in line]
    assert len(lines) == 2 and "first" in lines[0] and "hostname=m0" in lines[0]
    cancelled = run_cli("release", listed[0]["_id"], "--format", "plain", environ=environ)
    assert (cancelled.code, cancelled.out) == (0, "")
    assert cancelled.err == f"reservation {listed[0]['_id']} is cancelled: it no longer waits in line\n"
    listed = json.loads(run_cli("reservations", "--state", "queued", "--format", "json", environ=environ).out)
    assert [(r["position"], r["job_id"]) for r in listed] == [(1, "second")]
