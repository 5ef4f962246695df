"""Bulk POSTs: one uniqueness query per request, same answers as Eve's per-document check."""


def test_bulk_post_creates_every_document(operator, server):
    docs = [{"hostname": f"m{i}", "state": "idle"} for i in range(50)]
    response = operator.post("/machines", json=docs)
    assert response.status_code == 201, response.text
    assert server.db.machines.count_documents({}) == 50


def test_bulk_post_refuses_names_taken_or_repeated_and_stores_nothing(operator, server):
    assert operator.post("/machines", json={"hostname": "taken", "state": "idle"}).status_code == 201
    docs = [{"hostname": "new", "state": "idle"}, {"hostname": "taken", "state": "idle"},
            {"hostname": "twice", "state": "idle"}, {"hostname": "twice", "state": "idle"}]
    response = operator.post("/machines", json=docs)
    assert response.status_code == 422
    items = response.json()["_items"]
    assert [i["_status"] for i in items] == ["OK", "ERR", "OK", "ERR"]
    assert "value 'taken' is not unique" in items[1]["_issues"]["hostname"]
    assert "twice in this request" in items[3]["_issues"]["hostname"]
    assert sorted(d["hostname"] for d in server.db.machines.find()) == ["taken"]


def test_bulk_post_of_addresses_compares_canonical_forms(operator, server):
    assert operator.post("/private-addresses", json={"address": "fd00::1"}).status_code == 201
    response = operator.post("/private-addresses", json=[{"address": "fd00:0::0001"}, {"address": "10.0.0.1"}])
    assert response.status_code == 422
    assert "not unique" in str(response.json()["_items"][0]["_issues"]["address"])
    assert server.db.private_addresses.count_documents({}) == 1


def test_a_single_post_is_not_queried_first_the_unique_index_answers_409(operator, server):
    assert operator.post("/machines", json={"hostname": "h1", "state": "idle"}).status_code == 201
    response = operator.post("/machines", json={"hostname": "h1", "state": "idle"})
    assert response.status_code == 409
    assert response.json() == {"_status": "ERR", "_error": {
        "code": 409, "message": "duplicate hostname 'h1': it exists already",
        "request_id": response.headers["X-Request-Id"]}}
    assert server.db.machines.count_documents({}) == 1
