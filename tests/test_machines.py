"""CRUD on /machines over real HTTP, lookups by hostname, validation and If-Match."""

import pytest


def create(session, **fields):
    doc = {"hostname": "a-15-r.qa1.example.com", "state": "idle"}
    doc.update(fields)
    response = session.post("/machines", json=doc)
    assert response.status_code == 201, response.text
    return response.json()


def test_create_then_read_by_id_and_by_hostname(operator, anon):
    created = create(operator, owner="tony", tags={"memory": 17179869184, "cpucores": 8})
    by_id = anon.get(f"/machines/{created['_id']}").json()
    by_name = anon.get("/machines/a-15-r.qa1.example.com").json()
    assert by_id == by_name
    assert by_name["owner"] == "tony"
    assert by_name["tags"] == {"memory": 17179869184, "cpucores": 8}


def test_list_returns_items_and_pagination_meta(operator, anon):
    for i in range(3):
        create(operator, hostname=f"m{i}")
    body = anon.get("/machines").json()
    assert sorted(m["hostname"] for m in body["_items"]) == ["m0", "m1", "m2"]
    assert body["_meta"]["total"] == 3


def test_where_sort_projection(operator, anon):
    create(operator, hostname="b", state="in_use", owner="ci")
    create(operator, hostname="a", state="idle")
    create(operator, hostname="c", state="idle")
    body = anon.get("/machines", params={"where": '{"state": "idle"}', "sort": "-hostname",
                                         "projection": '{"hostname": 1}'}).json()
    assert [m["hostname"] for m in body["_items"]] == ["c", "a"]
    assert "state" not in body["_items"][0]


def test_patch_put_delete_by_hostname(operator, anon):
    create(operator, hostname="h1")
    assert operator.write("PATCH", "/machines/h1", json={"owner": "ci"}).status_code == 200
    assert anon.get("/machines/h1").json()["owner"] == "ci"
    assert operator.write("PUT", "/machines/h1", json={"hostname": "h1", "state": "needs_repair"}).status_code == 200
    doc = anon.get("/machines/h1").json()
    assert doc["state"] == "needs_repair" and "owner" not in doc
    assert operator.write("DELETE", "/machines/h1").status_code == 204
    assert anon.get("/machines/h1").status_code == 404


def test_unknown_machine_is_a_json_404(anon):
    response = anon.get("/machines/no-such-host")
    assert response.status_code == 404
    assert response.json()["_error"]["code"] == 404


@pytest.mark.parametrize(
    ("doc", "field", "needle"),
    [
        ({"state": "idle"}, "hostname", "required"),
        ({"hostname": "x", "state": "broken"}, "state", "unallowed value"),
        ({"hostname": "x", "state": "idle", "colour": "red"}, "colour", "unknown field"),
        ({"hostname": "x y", "state": "idle"}, "hostname", "does not match"),
        ({"hostname": "x", "state": "idle", "tags": "big"}, "tags", "must be of dict type"),
    ],
)
def test_invalid_machine_is_422_naming_the_field(operator, server, doc, field, needle):
    response = operator.post("/machines", json=doc)
    assert response.status_code == 422
    body = response.json()
    assert body["_status"] == "ERR"
    assert needle in str(body["_issues"][field])
    assert server.db.machines.count_documents({}) == 0


def test_if_match_missing_is_428_and_stale_is_412(operator):
    created = create(operator, hostname="h1")
    assert operator.patch("/machines/h1", json={"owner": "x"}).status_code == 428
    fresh = operator.patch("/machines/h1", json={"owner": "x"}, headers={"If-Match": created["_etag"]})
    assert fresh.status_code == 200
    stale = operator.patch("/machines/h1", json={"owner": "y"}, headers={"If-Match": created["_etag"]})
    assert stale.status_code == 412
    assert operator.get("/machines/h1").json()["owner"] == "x"
