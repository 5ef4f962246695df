"""Bodies that are not JSON objects get a 4xx naming the problem, never a 500."""

import pytest


@pytest.mark.parametrize(
    ("data", "content_type", "code", "needle"),
    [
        ("123", "application/json", 400, "not a number"),
        ('"x"', "application/json", 400, "not a string"),
        ("[1, 2]", "application/json", 400, "not an array"),
        ("[]", "application/json", 400, "not an array"),
        ("{bad json", "application/json", 400, "not valid JSON"),
        (b"\xff\xfe{}", "application/json", 400, "not valid UTF-8"),
        ("[" * 100000 + "]" * 100000, "application/json", 400, "nested too deeply"),
        ("hostname=x", "application/x-www-form-urlencoded", 415, "application/json"),
        ('{"hostname": "x", "state": "idle"}', "text/plain", 415, "text/plain"),
    ],
)
def test_bad_body_is_a_clear_4xx_and_changes_nothing(operator, server, data, content_type, code, needle):
    response = operator.post("/machines", data=data, headers={"Content-Type": content_type})
    assert response.status_code == code, response.text
    assert needle in response.json()["_error"]["message"]
    assert server.db.machines.count_documents({}) == 0


def test_oversized_body_is_413(operator, server):
    big = '{"hostname": "x", "state": "idle", "tags": {"blob": "' + "a" * (5 * 1024 * 1024) + '"}}'
    response = operator.post("/machines", data=big, headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert response.json()["_error"]["code"] == 413
    assert server.db.machines.count_documents({}) == 0


def test_patch_with_a_list_body_is_400(operator):
    operator.post("/machines", json={"hostname": "h1", "state": "idle"})
    response = operator.write("PATCH", "/machines/h1", json=[{"owner": "x"}])
    assert response.status_code == 400


def test_bulk_post_of_objects_is_accepted(operator, server):
    docs = [{"hostname": f"m{i}", "state": "idle"} for i in range(5)]
    assert operator.post("/machines", json=docs).status_code == 201
    assert server.db.machines.count_documents({}) == 5


def test_unknown_route_and_method_are_json(anon):
    missing = anon.get("/nope")
    assert missing.status_code == 404 and missing.json()["_status"] == "ERR"
    not_allowed = anon.delete("/healthz")
    assert not_allowed.status_code == 405 and not_allowed.json()["_error"]["code"] == 405
