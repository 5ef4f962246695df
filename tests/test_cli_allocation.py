"""Allocation from the library and the CLI: reserve, release, reservations, pools, history.

See docs/guides/cli.md and docs/reference/reservations.md.
"""

import json

import pytest

from resource_manager.clientlib.client import Conflict, NotFound, ResourceManagerClient

from .cli_helpers import run_cli
from .support import PASSWORDS


@pytest.fixture
def environ(server):
    return {"RM_ENDPOINT": server.url, "RM_USERNAME": "operator", "RM_PASSWORD": PASSWORDS["operator"]}


@pytest.fixture
def cli(environ):
    def run(*argv, **kwargs):
        return run_cli(*argv, environ=environ, **kwargs)

    return run


@pytest.fixture
def three_idle(operator):
    docs = [{"hostname": f"m{i}", "state": "idle", "tags": {"cpucores": 4 * (i + 1)}} for i in range(3)]
    assert operator.post("/machines", json=docs).status_code == 201


def test_reserve_release_cycle_from_the_cli(cli, server, three_idle):
    result = cli("reserve", "--count", "2", "--lease", "2h", "--job-id", "build-42", "--format", "plain")
    assert result.code == 0, result.err
    hosts = result.out.split()
    assert len(hosts) == 2
    for host in hosts:
        doc = server.db.machines.find_one({"hostname": host})
        assert doc["state"] == "in_use" and doc["job_id"] == "build-42"

    listed = json.loads(cli("reservations", "--job-id", "build-42", "--format", "json").out)
    assert len(listed) == 1 and sorted(listed[0]["hostnames"]) == sorted(hosts) and listed[0]["state"] == "active"
    table = cli("reservations", tty=True)
    assert "build-42" in table.out

    extended = cli("extend", listed[0]["_id"], "--lease", "1d")
    assert extended.code == 0 and json.loads(extended.out)["expires"] != listed[0]["expires"], extended.err

    history = json.loads(cli("history", hosts[0], "--format", "json").out)
    assert history[0]["action"] == "reserve"

    result = cli("release", "--job-id", "build-42", "--format", "plain")
    assert result.code == 0, result.err
    assert sorted(result.out.split()) == sorted(hosts)
    assert server.db.machines.count_documents({"state": "idle"}) == 3

    again = cli("release", listed[0]["_id"], "--format", "json")
    assert again.code == 0 and json.loads(again.out)["released"] == []


def test_reserve_with_where_and_dry_run(cli, three_idle, server):
    dry = cli("reserve", "--count", "1", "--where", '{"tags.cpucores": {"$gte": 12}}', "--dry-run", "--format", "plain")
    assert (dry.code, dry.out) == (0, "m2\n"), dry.err
    assert server.db.machines.count_documents({"state": "idle"}) == 3
    real = cli("reserve", "--count", "1", "--where", '{"tags.cpucores": {"$gte": 12}}', "--format", "json")
    assert json.loads(real.out)["hostnames"] == ["m2"]


def test_reserve_more_than_available_is_409_exit_4(cli, three_idle):
    assert cli("reserve", "--count", "1").code == 0
    result = cli("reserve", "--count", "3")
    assert result.code == 4
    assert result.err == "rmctl: POST /reservations: 409 requested 3, 2 available\n"
    result = cli("reserve", "--count", "5")
    assert result.code == 4
    assert result.err == ("rmctl: POST /reservations: 409 requested 5, but only 3 machines match the constraints "
                          "(in any state): it can never be met\n")


@pytest.mark.parametrize(("argv", "message"), [
    (["reserve", "--count", "1", "--lease", "soon"], "--lease: expected a duration"),
    (["reserve", "--count", "0"], "--count must be at least 1"),
    (["reserve"], "the following arguments are required: --count"),
    (["release"], "release needs a RESERVATION id or --job-id"),
    (["allocate-address", "p", "--count", "0"], "--count must be at least 1"),
])
def test_allocation_usage_errors(cli, argv, message):
    result = cli(*argv)
    assert result.code == 2 and message in result.err


def test_pools_and_address_allocation(cli, server, environ):
    admin = ResourceManagerClient(endpoint=server.url, username="admin", password=PASSWORDS["admin"], environ={})
    admin.create_pool("lab", "192.0.2.0/29", "private")
    admin.close()
    pools = json.loads(cli("pools", "--format", "json").out)
    assert [p["name"] for p in pools] == ["lab"] and pools[0]["utilisation"]["free"] >= 2
    assert "lab" in cli("pools", tty=True).out

    result = cli("allocate-address", "lab", "--count", "2", "--format", "plain")
    assert result.code == 0, result.err
    addresses = result.out.split()
    assert len(addresses) == 2 and all(a.startswith("192.0.2.") for a in addresses)
    full = cli("allocate-address", "lab", "--count", "50")
    assert full.code == 4 and "409" in full.err
    missing = cli("allocate-address", "nope")
    assert missing.code == 4 and "404" in missing.err


def test_library_allocation_calls(server, three_idle):
    with ResourceManagerClient(endpoint=server.url, username="operator", password=PASSWORDS["operator"],
                               environ={}) as client:
        res = client.reserve(2, job_id="j1", lease_seconds=60, idempotency_key="k-1")
        assert client.reserve(2, job_id="j1", lease_seconds=60, idempotency_key="k-1")["_id"] == res["_id"]
        assert client.reservation(res["_id"])["hostnames"] == res["hostnames"]
        assert client.extend(res["_id"], 3600)["_id"] == res["_id"]
        with pytest.raises(Conflict, match="requested 2, 1 available"):
            client.reserve(2)
        assert [r["_id"] for r in client.reservations(job_id="j1")] == [res["_id"]]
        assert sorted(client.release(res["_id"])["released"]) == sorted(res["hostnames"])
        assert client.history(res["hostnames"][0])[0]["action"] == "release"
        with pytest.raises(NotFound):
            client.reservation("no-such-reservation")
        with pytest.raises(ValueError):
            client.release()


def test_reasons_of_plain_writes_reach_the_history(cli, server):
    assert cli("create", "hostname=h1", "state=idle", "--reason", "racked").code == 0
    assert cli("update", "h1", "state=needs_repair", "--reason", "disk failed").code == 0
    history = json.loads(cli("history", "h1", "--format", "json").out)
    assert [(h["action"], h["reason"], h["user"]) for h in history] == [
        ("update", "disk failed", "operator"), ("create", "racked", "operator")]
    assert history[0]["changes"]["state"] == {"before": "idle", "after": "needs_repair"}
