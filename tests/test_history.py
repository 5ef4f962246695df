"""History over real HTTP: every change to a machine or an address, with who, what and why."""

import datetime


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
