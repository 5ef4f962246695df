"""Address pools over real HTTP: definitions, utilisation, lowest-free allocation, release and reuse."""

import ipaddress

from resource_manager.core.ipranges import free_addresses, merge, parse_pool

from .support import ADMIN, LiveServer


def make_pool(session, expect=201, **fields):
    body = {"name": "lab", "cidr": "10.0.0.0/24", "kind": "private"}
    body.update(fields)
    response = session.post("/address-pools", json=body)
    assert response.status_code == expect, response.text
    return response.json()


def allocate(session, pool="lab", expect=201, headers=None, **body):
    response = session.post(f"/address-pools/{pool}/allocate", json=body, headers=headers or {})
    assert response.status_code == expect, response.text
    return response.json()


def test_pool_definition_and_utilisation(operator, anon):
    pool = make_pool(operator, exclude=["10.0.0.10-10.0.0.19", "10.0.0.128/30", "10.0.0.200"])
    assert pool["utilisation"] == {"size": 256 - 3 - 10 - 4 - 1, "allocated": 0, "free": 238}
    assert anon.get("/address-pools/lab").json() == pool
    assert [p["name"] for p in anon.get("/address-pools").json()["_items"]] == ["lab"]
    make_pool(operator, name="v6", cidr="2001:db8::/120", kind="public")
    make_pool(operator, name="p2p", cidr="192.0.2.0/31", kind="public")
    make_pool(operator, name="one", cidr="192.0.2.9/32", kind="public")
    sizes = {p["name"]: p["utilisation"]["size"] for p in anon.get("/address-pools").json()["_items"]}
    assert sizes == {"lab": 238, "v6": 254, "p2p": 2, "one": 1}


def test_invalid_pools_are_refused(operator, admin, reader, anon):
    make_pool(operator)
    for fields, field in [({"cidr": "10.0.0.1/24"}, "cidr"), ({"cidr": "nonsense"}, "cidr"),
                          ({"kind": "secret"}, "kind"), ({"exclude": ["10.9.9.9"]}, "exclude"),
                          ({"exclude": "10.0.0.1"}, "exclude"), ({"name": "a b"}, "name"), ({"vlan": 3}, "vlan")]:
        body = make_pool(operator, expect=422, **dict({"name": "other", "cidr": "10.1.0.0/24"}, **fields))
        assert field in body["_issues"], fields
    assert "exists" in make_pool(operator, expect=409, cidr="10.2.0.0/24")["_error"]["message"]
    assert "overlaps pool lab" in make_pool(operator, expect=409, name="x", cidr="10.0.0.128/25")["_error"]["message"]
    make_pool(operator, name="pub", cidr="10.0.0.0/24", kind="public")  # other kind: other address space
    assert reader.post("/address-pools", json={"name": "r", "cidr": "10.3.0.0/24", "kind": "public"}
                       ).status_code == 403
    assert anon.get("/address-pools/nope").status_code == 404
    assert operator.delete("/address-pools/lab").status_code == 403
    assert admin.delete("/address-pools/lab").status_code == 204
    assert anon.get("/address-pools/lab").status_code == 404


def test_allocation_is_lowest_free_first_and_all_or_nothing(operator, anon, server):
    make_pool(operator, cidr="10.0.0.0/29", exclude=["10.0.0.3"])  # usable: .2 .4 .5 .6
    first = allocate(operator, owner="web", count=2)
    assert first["addresses"] == ["10.0.0.2", "10.0.0.4"] and first["owner"] == "web" and first["pool"] == "lab"
    doc = anon.get("/private-addresses/10.0.0.4").json()
    assert doc["owner"] == "web"
    body = allocate(operator, expect=409, owner="db", count=3)
    assert body["_error"]["message"] == "requested 3, 2 available"
    assert server.db.private_addresses.count_documents({}) == 2
    assert allocate(operator, owner="db", count=2)["addresses"] == ["10.0.0.5", "10.0.0.6"]
    assert anon.get("/address-pools/lab").json()["utilisation"] == {"size": 4, "allocated": 4, "free": 0}
    assert allocate(operator, expect=409, owner="x")["_error"]["message"] == "requested 1, 0 available"
    assert "count" in allocate(operator, expect=422, owner="x", count=0)["_issues"]
    assert allocate(operator, pool="nope", expect=404, owner="x")


def test_released_addresses_are_reused(operator, anon):
    make_pool(operator, cidr="10.0.0.0/28")
    assert allocate(operator, owner="a", count=3)["addresses"] == ["10.0.0.2", "10.0.0.3", "10.0.0.4"]
    assert operator.write("DELETE", "/private-addresses/10.0.0.3").status_code == 204
    assert operator.write("PATCH", "/private-addresses/10.0.0.2", json={"owner": None, "tags": {"k": 1}}
                          ).status_code == 200
    assert anon.get("/address-pools/lab").json()["utilisation"]["allocated"] == 1
    again = allocate(operator, owner="b", count=2)
    assert again["addresses"] == ["10.0.0.2", "10.0.0.3"]
    # The owner-less document was given its new owner, keeping what else it had.
    doc = anon.get("/private-addresses/10.0.0.2").json()
    assert doc["owner"] == "b" and doc["tags"] == {"k": 1}


def test_plain_writes_and_allocation_respect_each_other(operator, anon):
    make_pool(operator, cidr="10.0.0.0/28")
    # An address given an owner by hand is taken: allocation skips it.
    assert operator.post("/private-addresses", json={"address": "10.0.0.2", "owner": "manual"}).status_code == 201
    assert allocate(operator, owner="a")["addresses"] == ["10.0.0.3"]
    # Handing an allocated address to another owner is fine; it stays taken.
    assert operator.write("PATCH", "/private-addresses/10.0.0.3", json={"owner": "b"}).status_code == 200
    assert allocate(operator, owner="c")["addresses"] == ["10.0.0.4"]
    assert anon.get("/address-pools/lab").json()["utilisation"]["allocated"] == 3
    # Public and private are separate address spaces.
    make_pool(operator, name="pub", cidr="10.0.0.0/28", kind="public")
    assert allocate(operator, pool="pub", owner="a")["addresses"] == ["10.0.0.2"]


def test_idempotency_key_on_allocation(operator, server):
    make_pool(operator)
    key = {"Idempotency-Key": "vm-17"}
    first = allocate(operator, headers=key, owner="vm17", count=2)
    assert allocate(operator, headers=key, owner="vm17", count=2) == first
    assert server.db.private_addresses.count_documents({}) == 2
    assert "different request" in allocate(operator, expect=422, headers=key, owner="vm17")["_error"]["message"]


def test_crowded_slash16_allocates_the_next_free(operator, server):
    make_pool(operator, cidr="10.20.0.0/16")
    # 5,000 addresses already claimed (as by earlier allocations), one hole at .0.100.
    taken = [n for n in range(int(ipaddress.ip_address("10.20.0.2")), int(ipaddress.ip_address("10.20.19.138")))
             if n != int(ipaddress.ip_address("10.20.0.100"))]
    server.db.address_claims.insert_many(
        [{"_id": f"private/{ipaddress.ip_address(n)}", "kind": "private", "ipkey": f"4:{n:032x}", "holder": "old",
          "doc": None, "at": None} for n in taken])
    assert allocate(operator, owner="a", count=2)["addresses"] == ["10.20.0.100", "10.20.19.138"]
    assert server.db.address_claims.count_documents({}) == len(taken) + 2


def test_free_addresses_skips_exclusions_and_taken_ranges():
    network, excluded, issues = parse_pool("10.0.0.0/16", ["10.0.1.0/24"])
    assert not issues and excluded == [(167772160, 167772161), (167772416, 167772671), (167837695, 167837695)]
    taken = list(range(167772162, 167772416))  # everything below the excluded /24
    free = free_addresses(network, excluded, taken)
    assert [str(next(free)) for _ in range(2)] == ["10.0.2.0", "10.0.2.1"]
    assert merge([(5, 9), (1, 3), (4, 4), (20, 21)]) == [(1, 9), (20, 21)]
    v6, v6_excluded, _ = parse_pool("2001:db8::/126", [])
    assert [str(a) for a in free_addresses(v6, v6_excluded, [])] == ["2001:db8::2", "2001:db8::3"]


def test_a_stale_hint_never_misleads_allocation(operator, server):
    make_pool(operator, cidr="10.0.0.0/28")
    assert allocate(operator, owner="a", count=2)["addresses"] == ["10.0.0.2", "10.0.0.3"]
    hints = server.db.pool_hints
    # A hint that forgot every claim: the claims still refuse, the next free is found.
    hints.update_many({}, {"$set": {"bits": b"\x00\x00"}})
    assert allocate(operator, owner="b")["addresses"] == ["10.0.0.4"]
    # A hint that believes the pool full: rebuilt from the claims before any 409.
    hints.update_many({}, {"$set": {"bits": b"\xff\xff"}})
    assert allocate(operator, owner="c")["addresses"] == ["10.0.0.5"]
    assert allocate(operator, expect=409, owner="d", count=10)["_error"]["message"] == "requested 10, 9 available"


def test_plain_write_cannot_take_an_address_an_allocator_holds(operator, anon, server):
    assert operator.post("/public-addresses", json={"address": "192.0.2.7"}).status_code == 201
    # As an allocator holds it between claiming and writing the owner.
    server.db.address_claims.insert_one({"_id": "public/192.0.2.7", "kind": "public", "ipkey": "x",
                                         "holder": "alloc-1", "doc": None, "at": None})
    response = operator.write("PATCH", "/public-addresses/192.0.2.7", json={"owner": "eve"})
    assert response.status_code == 409 and "allocated" in response.json()["_error"]["message"]
    assert anon.get("/public-addresses/192.0.2.7").json().get("owner") is None
    # A bulk insert refused for one address keeps no claim for the others.
    server.db.address_claims.insert_one({"_id": "public/192.0.2.9", "kind": "public", "ipkey": "y",
                                         "holder": "alloc-2", "doc": None, "at": None})
    bulk = operator.post("/public-addresses", json=[{"address": "192.0.2.8", "owner": "a"},
                                                    {"address": "192.0.2.9", "owner": "b"}])
    assert bulk.status_code == 409
    assert sorted(c["_id"] for c in server.db.address_claims.find()) == ["public/192.0.2.7", "public/192.0.2.9"]
    assert server.db.public_addresses.count_documents({}) == 1


# Bounded costs (issue 13, finding 6).

def test_exclusions_are_stored_merged_and_reads_parse_none_of_them(operator, anon, server):
    pool = make_pool(operator, cidr="10.0.0.0/24", exclude=["10.0.0.12", "10.0.0.10-10.0.0.11", "10.0.0.13",
                                                             "10.0.0.64/30", "10.0.0.66", " 10.0.0.200 "])
    assert pool["exclude"] == ["10.0.0.10-10.0.0.13", "10.0.0.64-10.0.0.67", "10.0.0.200"]
    assert pool["utilisation"]["size"] == 256 - 3 - 4 - 4 - 1
    stored = server.db.address_pools.find_one({"name": "lab"})
    assert stored["exclude"] == pool["exclude"] and len(stored["ranges"]) == 5  # with .0-.1 and .255
    # Reads use the stored ranges alone: an exclusion list nobody could parse changes nothing.
    server.db.address_pools.update_one({"name": "lab"}, {"$set": {"exclude": ["not an address"]}})
    assert anon.get("/address-pools/lab").json()["utilisation"] == pool["utilisation"]
    assert allocate(operator, count=3)["addresses"] == ["10.0.0.2", "10.0.0.3", "10.0.0.4"]


def test_a_pool_stored_before_normalisation_still_reads(operator, anon, server):
    make_pool(operator, cidr="10.0.0.0/24", exclude=["10.0.0.2-10.0.0.9"])
    server.db.address_pools.update_one({"name": "lab"}, {"$unset": {"ranges": ""}})
    assert anon.get("/address-pools/lab").json()["utilisation"]["size"] == 256 - 3 - 8
    assert allocate(operator)["addresses"] == ["10.0.0.10"]


def test_more_than_1024_exclusions_are_refused(operator, server):
    exclude = [f"10.0.{i // 256}.{i % 256}" for i in range(0, 2050, 2)]
    body = make_pool(operator, expect=422, cidr="10.0.0.0/16", exclude=exclude)
    assert "at most 1024" in body["_issues"]["exclude"]
    make_pool(operator, cidr="10.0.0.0/16", exclude=exclude[:1024])
    assert len(server.db.address_pools.find_one()["exclude"]) == 1024


def test_the_number_of_pools_is_bounded(overrides, localdb, dbname):
    live = LiveServer(dict(overrides, POOLS_MAX=3))
    try:
        with live.session(ADMIN) as admin:
            for i in range(3):
                make_pool(admin, name=f"p{i}", cidr=f"10.{i}.0.0/24")
            body = make_pool(admin, expect=409, name="p3", cidr="10.3.0.0/24")
            assert "POOLS_MAX" in body["_error"]["message"]
            assert admin.delete("/address-pools/p0").status_code == 204
            make_pool(admin, name="p3", cidr="10.3.0.0/24")
        assert live.db.address_pools.count_documents({}) == 3
    finally:
        live.stop()
