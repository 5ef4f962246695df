"""The original project's scripts, their client calls as they make them, against our real server.

pxe_manager/pxemanager.py reserves machines and addresses with find_resources() and
update_resource(); update-resource-tags.py rewrites every machine's tags with get_all_resources(),
get_resource() and put_resource() of the document it read. Each test makes the same calls in the
same order, with the same JSON strings; the only change is where the server listens.
"""

import json

import pytest
import requests

from resource_manager.clientlib.client import ResourceManagerClient

from .support import write_users_file

JOB = "vic-CI-edge-23"


@pytest.fixture(scope="module")
def users_file(tmp_path_factory):
    """The test accounts plus admin/admin, the credentials the original client sends by default."""
    return write_users_file(str(tmp_path_factory.mktemp("users") / "users.json"), legacy_admin=True)


@pytest.fixture
def clients(server):
    """The three clients PxeManager is given: machines, public and private addresses (default credentials)."""
    made = [ResourceManagerClient(kind, endpoint=server.url, environ={})
            for kind in ("machines", "public-addresses", "private-addresses")]
    yield made
    for client in made:
        client.close()


def seed_fleet(client, count=150):
    """`count` machines as the original tool held them: owner and job_id '' when free, tags with memory."""
    docs = [{"hostname": f"a-{i:03d}.qa1.example.com", "owner": "" if i % 5 else "someone",
             "state": "idle" if i % 5 else "in_use", "job_id": "" if i % 5 else "old-job",
             "tags": {"memory": 17179869184 if i % 2 else 8589934592, "cpucores": 4}} for i in range(count)]
    assert not [r for r in client.create_many(docs) if isinstance(r, Exception)]
    return docs


def test_pxe_manager_reserves_then_frees_hosts(server, clients):
    host_manager = clients[0]
    seed_fleet(host_manager)
    # make_host_reservation(): every idle host, not the first page of them
    available_machines = host_manager.find_resources(field="state", value="idle")
    assert len(available_machines) == 120 and all("tags" in m for m in available_machines)
    chosen = [m["hostname"] for m in available_machines if m["tags"]["memory"] >= 17179869184 * .9][:3]
    for hostname in chosen:
        data = json.dumps({'hostname': hostname, 'owner': "tony", 'state': 'pxe', 'job_id': JOB})
        host_manager.update_resource(data)
    # is_system_ready() of the first, reservation_failed() of the second
    host_manager.update_resource(json.dumps({'hostname': chosen[0], 'state': 'in_use'}))
    host_manager.update_resource(json.dumps({'hostname': chosen[1], 'owner': '', 'state': 'pxe_failed',
                                             'job_id': ''}))
    stored = {m["hostname"]: m for m in server.db.machines.find({"hostname": {"$in": chosen}})}
    assert [(stored[h]["state"], stored[h]["owner"], stored[h]["job_id"]) for h in chosen] == [
        ("in_use", "tony", JOB), ("pxe_failed", "", ""), ("pxe", "tony", JOB)]
    assert len(host_manager.find_resources(field="state", value="idle")) == 117
    # free_machines('job_id', job)
    resources = host_manager.find_resources(field="job_id", value=JOB)
    assert sorted(r["hostname"] for r in resources) == sorted([chosen[0], chosen[2]])
    for resource in resources:
        data = json.dumps({'hostname': resource['hostname'], 'owner': '', 'state': 'idle', 'job_id': ''})
        host_manager.update_resource(data)
    assert server.db.machines.count_documents({"state": "idle"}) == 119
    assert server.db.machines.count_documents({"job_id": JOB}) == 0


def test_pxe_manager_reserves_then_frees_addresses(server, clients, operator):
    _, public, private = clients
    # Free addresses: the original wrote owner ''; ours may also have no owner, or null.
    owners = {0: "", 1: None, 2: "taken"}
    docs = [{"address": f"10.111.51.{i}", "owner": owners[i % 3] if i < 30 else ""} for i in range(110)]
    for doc in docs[3:30:9]:
        del doc["owner"]
    assert operator.post("/public-addresses", json=docs).status_code == 201
    owned = {f"10.111.51.{i}" for i in range(2, 30, 3)}
    # make_ip_reservation('public', JOB, 4)
    free_addresses = public.find_resources(field="owner", value="")
    assert len(free_addresses) == 100 and not owned & {a["address"] for a in free_addresses}
    reserved = []
    for i in range(4):
        address = free_addresses[i]['address']
        data = json.dumps({'address': address, 'owner': JOB})
        public.update_resource(data)
        reserved.append(address)
    assert sorted(a["address"] for a in server.db.public_addresses.find({"owner": JOB})) == sorted(reserved)
    assert len(public.find_resources(field="owner", value="")) == 96
    # Owned addresses hold their claim, so the pools' allocator will not hand them out too.
    assert {c["_id"] for c in server.db.address_claims.find()} == {f"public/{a}" for a in reserved + sorted(owned)}
    # free_ip_reservation('public', 'owner', JOB)
    resources = public.find_resources(field="owner", value=JOB)
    for resource in resources:
        data = json.dumps({'address': resource['address'], 'owner': ''})
        public.update_resource(data)
    assert len(public.find_resources(field="owner", value="")) == 100
    assert private.find_resources(field="owner", value="") == []


def test_update_resource_tags_puts_back_what_it_read(server, clients):
    client = clients[0]
    seed_fleet(client, 120)
    held = client.reserve(1, job_id="held", where={"hostname": "a-001.qa1.example.com"})
    ourlist = client.get_all_resources()
    assert len(ourlist) == 120
    rewritten = [item for item in ourlist if item["hostname"] < "a-012"]  # the script's regex picks some
    assert len(rewritten) == 12
    for item in rewritten:
        machine = client.get_resource(item['hostname'])
        if 'tags' not in machine.keys():
            machine['tags'] = {}
        machine['tags']['memory'] = 131823348 * 1024
        machine['tags']['cpumhz'] = 2600
        machine['tags']['interfaces'] = [{'ratembps': 10000}]
        del machine['tags']['cpucores']  # PUT replaces tags whole: a PATCH could not drop a key
        machine.pop('_updated')
        machine.pop('_etag')
        machine.pop('_created')
        machine.pop('_links')
        client.put_resource(json.dumps(machine))
    fields = ("hostname", "state", "owner", "job_id", "reservation")
    for item in rewritten:
        stored = server.db.machines.find_one({"hostname": item["hostname"]})
        assert stored["tags"] == {"memory": 134987108352, "cpumhz": 2600, "interfaces": [{"ratembps": 10000}]}
        assert [stored.get(f) for f in fields] == [item.get(f) for f in fields] and stored["_etag"] != item["_etag"]
    # The reserved machine kept its reservation through the PUT (a tags change is allowed while held).
    reserved = server.db.machines.find_one({"hostname": "a-001.qa1.example.com"})
    assert (reserved["reservation"], reserved["state"], reserved["job_id"]) == (held["_id"], "in_use", "held")
    untouched = sorted((item for item in ourlist if item not in rewritten), key=lambda m: m["hostname"])
    stored = server.db.machines.find({"hostname": {"$gte": "a-012"}}, sort=[("hostname", 1)])
    assert [(m["tags"], m["_etag"]) for m in stored] == [(m["tags"], m["_etag"]) for m in untouched]


def test_urls_built_from_the_original_attributes(server, clients):
    # Scripts built their own requests from the client's endpoint, auth and headers.
    client = clients[0]
    created = requests.post(client.endpoint, data=json.dumps({"hostname": "raw-1", "state": "idle"}),
                            headers=client.headers, auth=client.auth, timeout=30)
    assert created.status_code == 201
    machine = requests.get(client.endpoint + "/raw-1", auth=client.auth, timeout=30).json()
    assert machine["hostname"] == "raw-1"
    table = [[item.get(field) for field in client.fields] for item in
             requests.get(client.endpoint, auth=client.auth, timeout=30).json()["_items"]]
    assert table == [["raw-1", None, "idle", None, {}, machine["_updated"], machine["_id"]]]


def test_writing_back_what_is_stored_succeeds_every_time(server, clients):
    # Running a script twice writes unchanged documents. Several in a row: some land within the
    # second of the write before, where Eve saw "nothing modified" and answered 412.
    client = clients[0]
    client.create_resource('{"hostname": "h1", "owner": "", "state": "idle", "job_id": "", "tags": {"memory": 8}}')
    for _ in range(5):
        machine = client.get_resource("h1")
        for meta in ("_updated", "_etag", "_created", "_links"):
            machine.pop(meta)
        assert client.put_resource(json.dumps(machine))["tags"] == {"memory": 8}
    for _ in range(5):
        client.update_resource(json.dumps({'hostname': 'h1', 'owner': '', 'state': 'idle', 'job_id': ''}))
    stored = server.db.machines.find_one({"hostname": "h1"})
    assert (stored["owner"], stored["state"], stored["job_id"], stored["tags"]) == ("", "idle", "", {"memory": 8})
    # A stale If-Match is still refused.
    etag = client.get_resource("h1")["_etag"]
    client.update_resource('{"hostname": "h1", "owner": "someone"}')
    stale = requests.put(client.endpoint + "/h1", json={"hostname": "h1", "state": "idle"}, auth=client.auth,
                         headers={"If-Match": etag}, timeout=30)
    assert stale.status_code == 412
