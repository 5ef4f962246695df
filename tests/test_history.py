"""History over real HTTP: every change to a machine or an address, with who, what and why."""

import datetime
import json

from resource_manager.clientlib.client import ResourceManagerClient
from resource_manager.core import history
from resource_manager.core.clock import utcnow
from resource_manager.core.context import Actor

from .cli_helpers import run_cli
from .support import OPERATOR


def actions(session, path):
    response = session.get(path + "/history")
    assert response.status_code == 200, response.text
    return response.json()["_items"]


def test_machine_history_records_every_change_newest_first(operator, admin, anon, server):
    created = operator.post("/machines", json={"hostname": "m1", "state": "idle", "tags": {"rack": "r1"}}).json()
    etag = created["_etag"]
    patched = operator.patch("/machines/m1", json={"state": "needs_repair", "tags": {"rack": "r2"}},
                             headers={"If-Match": etag, "X-Reason": "fan noise"})
    assert patched.status_code == 200
    operator.write("PATCH", "/machines/m1", json={"state": "idle"})
    res = operator.post("/reservations", json={"count": 1, "owner": "ci", "job_id": "b7", "reason": "nightly"}).json()
    operator.delete(f"/reservations/{res['_id']}?reason=done")
    assert admin.write("DELETE", "/machines/m1").status_code == 204

    items = actions(anon, "/machines/m1")
    assert [i["action"] for i in items] == ["delete", "release", "reserve", "update", "update", "create"]
    delete, release, reserve, _idle, repair, create = items
    assert create["user"] == "operator" and create["changes"]["hostname"] == {"before": None, "after": "m1"}
    assert repair["reason"] == "fan noise"
    assert repair["changes"] == {"state": {"before": "idle", "after": "needs_repair"},
                                 "tags": {"before": {"rack": "r1"}, "after": {"rack": "r2"}}}
    assert reserve["job_id"] == "b7" and reserve["reason"] == "nightly" and reserve["user"] == "operator"
    assert reserve["changes"]["state"] == {"before": "idle", "after": "in_use"}
    assert reserve["changes"]["owner"] == {"before": None, "after": "ci"}
    assert release["job_id"] == "b7" and release["reason"] == "done"
    assert release["changes"]["owner"] == {"before": "ci", "after": None}
    assert delete["user"] == "admin" and delete["changes"]["state"]["after"] is None
    assert all(datetime.datetime.strptime(i["at"], "%Y-%m-%dT%H:%M:%SZ") for i in items)
    # By _id too, and the history outlives the machine.
    assert [i["action"] for i in actions(anon, f"/machines/{created['_id']}")] == [i["action"] for i in items]
    assert actions(anon, "/machines/never-existed") == []


def test_expiry_is_recorded(operator, anon, clock):
    operator.post("/machines", json={"hostname": "m1", "state": "idle"})
    operator.post("/reservations", json={"count": 1, "lease_seconds": 60, "job_id": "j"})
    clock.advance(61)
    assert operator.post("/reservations/sweep").json()["expired"] == 1
    latest = actions(anon, "/machines/m1")[0]
    assert latest["action"] == "expire" and latest["job_id"] == "j" and latest["reason"] == "lease expired"


def test_address_history_allocate_release(operator, anon):
    operator.post("/address-pools", json={"name": "p", "cidr": "198.51.100.0/24", "kind": "public"})
    operator.post("/address-pools/p/allocate", json={"owner": "web", "reason": "new vm"})
    operator.write("PATCH", "/public-addresses/198.51.100.2", json={"owner": None})
    operator.write("DELETE", "/public-addresses/198.51.100.2")
    items = actions(anon, "/public-addresses/198.51.100.2")
    assert [i["action"] for i in items] == ["delete", "update", "allocate"]
    assert items[2]["reason"] == "new vm" and items[2]["changes"]["owner"] == {"before": None, "after": "web"}
    assert items[1]["changes"] == {"owner": {"before": "web", "after": None}}
    assert actions(anon, "/private-addresses/198.51.100.2") == []


def _seed_history(db, hostname, count):
    """Store `count` entries for `hostname`, a second apart after now: entry i changes tags.run to i."""
    start = utcnow() + datetime.timedelta(seconds=1)
    doc = {"hostname": hostname, "_id": "0" * 24, "job_id": None}
    db.history.insert_many([history.entry("machines", doc, "update", {"tags": {"before": {"run": i - 1},
                                                                                "after": {"run": i}}},
                                          Actor("operator"), start + datetime.timedelta(seconds=i))
                            for i in range(count)])


def test_history_is_paged_like_the_collections(server, operator, anon):
    operator.post("/machines", json={"hostname": "m1", "state": "idle"})  # one create entry, the oldest
    _seed_history(server.db, "m1", 1004)  # 1,005 entries in all: more than a page of 1,000
    first = anon.get("/machines/m1/history")
    assert first.status_code == 200
    body = first.json()
    assert len(body["_items"]) == 1000 and body["_meta"] == {"page": 1, "max_results": 1000, "total": 1005}
    assert body["_items"][0]["changes"]["tags"]["after"] == {"run": 1003}  # newest first
    rest = anon.get(body["_links"]["next"]["href"]).json()
    assert [i["action"] for i in rest["_items"]] == ["update"] * 4 + ["create"]
    assert "next" not in rest["_links"] and rest["_meta"] == {"page": 2, "max_results": 1000, "total": 1005}
    # Pages of a chosen size; ?page alone gives pages of 100; the last page says the exact total.
    page = anon.get("/machines/m1/history", params={"max_results": 2, "page": 3}).json()
    assert [i["changes"]["tags"]["after"]["run"] for i in page["_items"]] == [999, 998]
    assert page["_links"]["next"]["href"] == "/machines/m1/history?max_results=2&page=4"
    assert page["_meta"] == {"page": 3, "max_results": 2, "total": 1005}
    assert anon.get("/machines/m1/history?page=11").json()["_meta"] == {"page": 11, "max_results": 100, "total": 1005}
    assert anon.get("/machines/m1/history?page=12").json() == {
        "_items": [], "_meta": {"page": 12, "max_results": 100, "total": 1005},
        "_links": {"self": {"href": "/machines/m1/history?max_results=100&page=12"}, "parent": {"href": "/machines/m1"},
                   "prev": {"href": "/machines/m1/history?max_results=100&page=11"}}}
    for bad in ({"max_results": 0}, {"max_results": "x"}, {"page": 0}, {"page": "-1"}):
        response = anon.get("/machines/m1/history", params=bad)
        assert response.status_code == 400 and next(iter(bad)) in response.json()["_error"]["message"]


def test_the_client_and_the_cli_read_every_page_of_a_history(server, operator):
    operator.post("/machines", json={"hostname": "m1", "state": "idle"})
    _seed_history(server.db, "m1", 1004)
    with ResourceManagerClient("machines", server.url, *OPERATOR) as rm:
        entries = rm.history("m1")
    assert len(entries) == 1005 and entries[-1]["action"] == "create"
    assert [e["changes"]["tags"]["after"]["run"] for e in entries[:-1]] == list(range(1003, -1, -1))
    listed = run_cli("history", "m1", "--format", "json", environ={"RM_ENDPOINT": server.url})
    assert listed.code == 0, listed.err
    assert json.loads(listed.out) == entries


def test_the_cli_shows_changes_as_the_dashboard_does(server, operator):
    operator.post("/machines", json={"hostname": "m1", "state": "idle", "owner": "ci"})
    operator.write("PATCH", "/machines/m1", json={"state": "needs_repair", "owner": None, "tags": {"disk": 2}})
    shown = run_cli("history", "m1", "--format", "table", environ={"RM_ENDPOINT": server.url})
    assert shown.code == 0, shown.err
    assert "state: idle → needs_repair" in shown.out
    assert "owner: ci → —" in shown.out and 'tags: {} → {"disk": 2}' in shown.out
    assert "before=" not in shown.out and "after=" not in shown.out
