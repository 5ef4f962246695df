"""/public-addresses and /private-addresses: canonical addresses, lookups by address."""

import pytest


@pytest.mark.parametrize("kind", ["public", "private"])
def test_address_stored_canonical_and_found_by_any_spelling(operator, anon, kind):
    response = operator.post(f"/{kind}-addresses", json={"address": "2001:DB8:0:0::1", "owner": "tony"})
    assert response.status_code == 201, response.text
    doc = anon.get(f"/{kind}-addresses/2001:db8::1").json()
    assert doc["address"] == "2001:db8::1"
    assert anon.get(f"/{kind}-addresses/2001:0DB8::0001").json()["_id"] == doc["_id"]


def test_ipv4_crud_by_address(operator, anon):
    assert operator.post("/private-addresses", json={"address": "10.0.0.7"}).status_code == 201
    assert operator.write("PATCH", "/private-addresses/10.0.0.7", json={"owner": "ci"}).status_code == 200
    assert anon.get("/private-addresses/10.0.0.7").json()["owner"] == "ci"
    assert operator.write("DELETE", "/private-addresses/10.0.0.7").status_code == 204
    assert anon.get("/private-addresses/10.0.0.7").status_code == 404


@pytest.mark.parametrize("bad", ["10.0.0.256", "not-an-ip", "", "10.0.0.0/24", 42])
def test_invalid_address_is_422(operator, server, bad):
    response = operator.post("/public-addresses", json={"address": bad})
    assert response.status_code == 422
    assert "address" in response.json()["_issues"]
    assert server.db.public_addresses.count_documents({}) == 0


def test_duplicate_address_in_another_spelling_is_refused(operator, server):
    assert operator.post("/public-addresses", json={"address": "2001:db8::1"}).status_code == 201
    response = operator.post("/public-addresses", json={"address": "2001:DB8::0:1"})
    assert response.status_code == 409
    assert response.json()["_error"]["message"] == "duplicate address '2001:db8::1': it exists already"
    assert server.db.public_addresses.count_documents({}) == 1


def test_public_and_private_are_separate_collections(operator, anon):
    assert operator.post("/public-addresses", json={"address": "192.0.2.1"}).status_code == 201
    assert operator.post("/private-addresses", json={"address": "192.0.2.1"}).status_code == 201
    assert anon.get("/public-addresses").json()["_meta"]["total"] == 1
