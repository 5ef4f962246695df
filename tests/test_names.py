"""Names (issue 13, findings 7-9): one canonical form per DNS name, ObjectId-looking hostnames, IPv6 zone ids."""

import pytest

MACHINE = {"state": "idle"}


def test_one_dns_name_is_one_machine_whatever_its_spelling(server, operator):
    created = operator.post("/machines", json={"hostname": "H.Example.COM.", **MACHINE})
    assert created.status_code == 201, created.text
    for spelling in ("h.example.com", "h.example.com.", "H.EXAMPLE.com"):
        response = operator.post("/machines", json={"hostname": spelling, **MACHINE})
        assert response.status_code == 409, response.text  # the unique index, on the canonical form
        assert response.json()["_error"]["message"] == "duplicate hostname 'h.example.com': it exists already"
    assert [m["hostname"] for m in server.db.machines.find()] == ["h.example.com"]
    # Any spelling finds it, and the stored form is what comes back.
    for spelling in ("H.Example.COM.", "h.example.com", "h.EXAMPLE.com."):
        assert operator.get(f"/machines/{spelling}").json()["hostname"] == "h.example.com"


def test_the_unique_index_holds_the_canonical_form_in_a_bulk_insert(server, operator):
    response = operator.post("/machines", json=[{"hostname": "Bulk-1", **MACHINE}, {"hostname": "bulk-1.", **MACHINE}])
    assert response.status_code == 422, response.text
    assert server.db.machines.count_documents({}) == 0


def test_renaming_onto_another_spelling_of_a_taken_name_is_refused(server, operator):
    assert operator.post("/machines", json={"hostname": "a1", **MACHINE}).status_code == 201
    assert operator.post("/machines", json={"hostname": "b1", **MACHINE}).status_code == 201
    response = operator.write("PATCH", "/machines/b1", json={"hostname": "A1."})
    assert response.status_code == 409, response.text  # the unique index refuses it at the write
    assert sorted(m["hostname"] for m in server.db.machines.find()) == ["a1", "b1"]


@pytest.mark.parametrize("name", ["h..x", "h.", "\u212aelvin"])  # empty label; KELVIN SIGN lowers to k
def test_names_that_do_not_canonicalise_cleanly_are_422(server, operator, name):
    response = operator.post("/machines", json={"hostname": name + ".", **MACHINE})
    assert response.status_code == 422, response.text
    assert server.db.machines.count_documents({}) == 0


def test_a_hostname_of_24_hex_digits_works_by_its_url(server, operator):
    name = "5f1e9a3b2c4d6e8f0a1b2c3d"
    assert operator.post("/machines", json={"hostname": name, **MACHINE}).status_code == 201
    assert operator.get(f"/machines/{name}").json()["hostname"] == name
    assert operator.write("PATCH", f"/machines/{name}", json={"owner": "ci"}).status_code == 200
    assert server.db.machines.find_one({"hostname": name})["owner"] == "ci"
    assert operator.get(f"/machines/{name}/history").json()["_items"][0]["action"] == "update"
    assert operator.write("DELETE", f"/machines/{name}").status_code == 204
    assert server.db.machines.count_documents({}) == 0


def test_a_hostname_equal_to_another_machines_id_never_reaches_that_machine(server, operator):
    victim = operator.post("/machines", json={"hostname": "victim", **MACHINE}).json()
    assert operator.post("/machines", json={"hostname": victim["_id"], **MACHINE}).status_code == 201
    # The URL is both one machine's _id and the other's name: ambiguous, so neither is touched.
    response = operator.get(f"/machines/{victim['_id']}")
    assert response.status_code == 409, response.text
    assert "ambiguous" in response.json()["_error"]["message"]
    for method in ("PATCH", "DELETE"):
        response = operator.request(method, f"/machines/{victim['_id']}", json={"owner": "x"},
                                    headers={"If-Match": victim["_etag"]})
        assert response.status_code == 409, response.text
    assert server.db.machines.find_one({"hostname": "victim"}).get("owner") is None
    assert server.db.machines.count_documents({}) == 2
    # Each stays reachable without ambiguity: the victim by name, the other by its own _id.
    assert operator.get("/machines/victim").json()["_id"] == victim["_id"]
    other = server.db.machines.find_one({"hostname": victim["_id"]})
    assert operator.get(f"/machines/{other['_id']}").json()["hostname"] == victim["_id"]


def test_reservation_constraints_compare_canonical_names(server, operator):
    assert operator.post("/machines", json={"hostname": "r1.lab", **MACHINE}).status_code == 201
    response = operator.post("/reservations?dry_run=1", json={"count": 1, "where": {"hostname": "R1.Lab."}})
    assert response.status_code == 200, response.text
    assert response.json()["would_reserve"] == ["r1.lab"]


def test_the_dashboard_finds_a_machine_by_any_spelling(server, operator, anon):
    assert operator.post("/machines", json={"hostname": "dash-1", **MACHINE}).status_code == 201
    assert anon.get("/ui/machines/DASH-1.").status_code == 200


@pytest.mark.parametrize("address", ["fe80::1%eth0", "fe80::1%1", "2001:db8::1%25eth0"])
def test_ipv6_zone_ids_are_refused(server, operator, address):
    assert operator.post("/public-addresses", json={"address": "fe80::1"}).status_code == 201
    response = operator.post("/public-addresses", json={"address": address})
    assert response.status_code == 422, response.text
    assert "zone id" in response.json()["_issues"]["address"]
    assert [a["address"] for a in server.db.public_addresses.find()] == ["fe80::1"]


def test_zone_ids_in_pools_are_refused(server, admin):
    for body in ({"name": "z1", "cidr": "fe80::%eth0/64", "kind": "private"},
                 {"name": "z2", "cidr": "fe80::/64", "kind": "private", "exclude": ["fe80::5%eth0"]}):
        response = admin.post("/address-pools", json=body)
        assert response.status_code == 422, response.text
        assert "zone id" in response.text
    assert server.db.address_pools.count_documents({}) == 0


def test_a_name_stored_before_canonicalisation_is_still_found_by_its_spelling(server, operator):
    server.db.machines.insert_one({"hostname": "Legacy.Example.COM", "state": "idle", "tags": {}})  # an old row
    assert operator.get("/machines/Legacy.Example.COM").json()["hostname"] == "Legacy.Example.COM"
    # Renaming it to its canonical form makes every spelling find it.
    assert operator.write("PATCH", "/machines/Legacy.Example.COM", json={"hostname": "legacy.example.com"}
                          ).status_code == 200
    assert operator.get("/machines/LEGACY.example.com.").json()["hostname"] == "legacy.example.com"
