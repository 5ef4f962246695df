"""The library: `with rm.holding(...)` and `rm.heartbeat(id)`, over real HTTP against the live server (real clock)."""

import subprocess
import sys
import textwrap
import threading
import time

import pytest

from resource_manager.clientlib.client import Conflict, ResourceManagerClient

from .cli_helpers import ROOT, subprocess_env
from .run_support import await_end
from .support import OPERATOR, PASSWORDS


@pytest.fixture
def rm(server, operator):
    for name in ("m1", "m2", "m3"):
        body = {"hostname": name, "state": "idle", "tags": {"rack": "r1" if name != "m3" else "r2"}}
        assert operator.post("/machines", json=body).status_code == 201
    with ResourceManagerClient("machines", server.url, *OPERATOR, environ={}) as client:
        yield client


def stored(server, job_id):
    return server.db.reservations.find_one({"job_id": job_id})


def test_holding_reserves_keeps_alive_and_releases(server, rm):
    with rm.holding(count=2, where={"tags.rack": "r1"}, heartbeat=5, lease=3600, job_id="lib") as machines:
        assert machines["hostnames"] == ["m1", "m2"] and machines["state"] == "active"
        assert [m["hostname"] for m in machines["machines"]] == ["m1", "m2"]
        assert machines["machines"][0]["tags"] == {"rack": "r1"} and "_links" not in machines["machines"][0]
        first = stored(server, "lib")["heartbeat_at"]
        assert stored(server, "lib")["heartbeat_seconds"] == 5 and machines["lease_seconds"] == 3600
        deadline = time.monotonic() + 30
        while stored(server, "lib")["heartbeat_at"] == first:  # a beat every 5/3 s
            assert time.monotonic() < deadline
            time.sleep(0.1)
    res = stored(server, "lib")
    assert res["state"] == "released" and res["heartbeat_due"] > first
    assert server.db.machines.count_documents({"state": "idle"}) == 3


@pytest.mark.parametrize("error", [ValueError, KeyboardInterrupt])
def test_holding_releases_when_the_block_raises(server, rm, error):
    with pytest.raises(error):
        with rm.holding(count=3, job_id="raises"):
            raise error
    assert stored(server, "raises")["state"] == "released"
    assert server.db.machines.count_documents({"state": "idle"}) == 3


def test_holding_that_cannot_be_met_raises_and_holds_nothing(server, rm):
    with pytest.raises(Conflict, match="requested 4, but only 3 machines match .*: it can never be met"):
        with rm.holding(count=4):
            pytest.fail("never entered")
    assert server.db.reservations.count_documents({}) == 0


def test_on_lost_says_when_the_reservation_ends_under_the_block(server, rm, operator):
    lost = []
    said = threading.Event()

    def on_lost(message):
        lost.append(message)
        said.set()

    with rm.holding(count=1, heartbeat=6, job_id="lost", on_lost=on_lost) as machines:
        assert operator.delete(f"/reservations/{machines['_id']}").status_code == 200
        assert said.wait(30)  # the next beat (within 2 s) answers 409
    assert lost == [f"reservation {machines['_id']} has ended: released"]


def test_rm_heartbeat_renews_the_window_until_the_end(server, rm):
    res = rm.reserve(1, heartbeat_seconds=60, job_id="beat")
    before = stored(server, "beat")["heartbeat_due"]
    beaten = rm.heartbeat(res["_id"])
    assert beaten["state"] == "active" and stored(server, "beat")["heartbeat_due"] >= before
    rm.release(res["_id"])
    with pytest.raises(Conflict, match=f"reservation {res['_id']} has ended: released"):
        rm.heartbeat(res["_id"])


def test_the_heartbeat_thread_never_keeps_a_process_alive(server, rm, anon):
    """A script that takes machines and ends without releasing: it exits; then the server frees them by itself."""
    script = textwrap.dedent(f"""
        from resource_manager.clientlib.client import ResourceManagerClient
        rm = ResourceManagerClient("machines", {server.url!r}, "operator", {PASSWORDS["operator"]!r}, environ={{}})
        hold = rm.holding(count=1, heartbeat=5, job_id="forgotten")
        hold.__enter__()   # never left: no release
        print(hold.id, flush=True)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=ROOT,
                          env=subprocess_env())
    assert done.returncode == 0, done.stderr
    rid = done.stdout.strip()
    assert stored(server, "forgotten")["state"] == "active"
    res, _took = await_end(anon, rid)
    assert res["state"] == "expired" and res["end_reason"].startswith("no heartbeat for 5 s")
