"""Copying the original ResourceManager's machines and addresses into ours (docs/guides/migration.md).

The source is a database filled the way the original server filled it (Eve's documents in the
collections machines, public-addresses and private-addresses), served by Eve with the original's
listing settings (no pagination, reads open). The docs' one-line loop of `rmctl export | rmctl
import` copies it into our real server; pointing our server's MONGO_URI at it shows the machines only.
"""

import datetime
import hashlib
import threading

import pymongo
import pytest
from bson import ObjectId
from eve import Eve
from werkzeug.serving import make_server

from .cli_helpers import shell, subprocess_env
from .support import ADMIN, LiveServer

# The original server's settings that decide what a listing answers (its api_config.py): no
# pagination, items found by name, the same fields. Only reads are needed here.
ORIGINAL_SCHEMA = {
    "machines": {"hostname": {"type": "string", "required": True, "unique": True},
                 "owner": {"type": "string"},
                 "state": {"type": "string", "required": True,
                           "allowed": ["pxe", "pxe_failed", "idle", "in_use", "needs_repair"]},
                 "job_id": {"type": "string"}, "tags": {"type": "dict"}},
    "public-addresses": {"address": {"type": "string", "required": True, "unique": True},
                         "owner": {"type": "string"}, "tags": {"type": "dict"}},
    "private-addresses": {"address": {"type": "string", "required": True, "unique": True},
                          "owner": {"type": "string"}, "tags": {"type": "dict"}},
}
MACHINES = 1005  # more than one page of the 1000 our client asks for: the original cut there


def original_settings(uri, dbname):
    domain = {name: {"schema": schema, "additional_lookup": {"url": r'regex("[\.\w-]+")',
                                                               "field": next(iter(schema))}}
              for name, schema in ORIGINAL_SCHEMA.items()}
    return {"MONGO_URI": uri, "MONGO_DBNAME": dbname, "PAGINATION": False, "DOMAIN": domain,
            "RESOURCE_METHODS": ["GET"], "ITEM_METHODS": ["GET"]}


def as_the_original_stored(doc, when):
    """A document as Eve stored it on insert: _id, _created, _updated and an _etag of its content."""
    doc = dict(doc, _id=ObjectId(), _created=when, _updated=when)
    doc["_etag"] = hashlib.sha1(repr(sorted(doc.items())).encode()).hexdigest()
    return doc


@pytest.fixture
def original(localdb):
    """A database filled the original way, and the original's API over it: (url, database)."""
    dbname = f"test_original_{ObjectId()}"
    mongo = pymongo.MongoClient(localdb.uri)
    db = mongo[dbname]
    when = datetime.datetime(2017, 3, 13, 9, 30, 0)
    machines = [{"hostname": f"a-{i:04d}.qa1.eucalyptus-systems.com", "owner": "" if i % 4 else "tony",
                 "state": "idle" if i % 4 else "in_use", "job_id": "" if i % 4 else "vic-CI-edge-23",
                 "tags": {"memory": 17179869184, "cpucores": 4, "interfaces": [{"ratembps": 1000}]}}
                for i in range(MACHINES)]
    machines[7] = {"hostname": machines[7]["hostname"], "owner": "tony", "state": "needs_repair"}  # no tags, no job
    db["machines"].insert_many([as_the_original_stored(m, when) for m in machines])
    db["public-addresses"].insert_many([as_the_original_stored({"address": f"10.111.5.{i}", "owner": ""}, when)
                                        for i in range(1, 21)] +
                                       [as_the_original_stored({"address": "10.111.5.300", "owner": ""}, when)])
    db["private-addresses"].insert_many([as_the_original_stored({"address": f"172.16.0.{i}",
                                                                 "owner": "job-9" if i < 3 else ""}, when)
                                         for i in range(1, 11)])
    app = Eve(settings=original_settings(localdb.uri, dbname))
    httpd = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}", db
    httpd.shutdown()
    httpd.server_close()
    with app.app_context():
        for client, _db in app.extensions.get("pymongo", {}).values():  # made on the first request
            client.close()
    mongo.drop_database(dbname)
    mongo.close()


COPY = ("for r in machines public-addresses private-addresses; do "
        "rmctl -e {old} -r $r export | rmctl -e {new} -u {user} -p {password} -r $r import -; done")


def test_the_readme_loop_copies_machines_and_addresses(original, server, tmp_path):
    old_url, old_db = original
    result = shell(COPY.format(old=old_url, new=server.url, user=ADMIN[0], password=ADMIN[1]),
                   subprocess_env(), cwd=str(tmp_path), timeout=240)
    assert result.out.splitlines() == [f"created {MACHINES}, updated 0, unchanged 0, failed 0",
                                       "created 20, updated 0, unchanged 0, failed 1",
                                       "created 10, updated 0, unchanged 0, failed 0"], result.err
    # The one address ours refuses is named, not dropped in silence.
    assert result.err == "rmctl: line 21 (10.111.5.300): address: '10.111.5.300' is not a valid IPv4 or IPv6 address\n"
    fields = ("hostname", "owner", "state", "job_id", "tags")
    copied = {m["hostname"]: m for m in server.db.machines.find()}
    for machine in old_db["machines"].find():
        assert {f: copied[machine["hostname"]].get(f) for f in fields if f in machine} == {
            f: machine[f] for f in fields if f in machine}
    assert copied["a-0007.qa1.eucalyptus-systems.com"]["tags"] == {}
    assert sorted(a["address"] for a in server.db.public_addresses.find({"owner": ""})) == sorted(
        f"10.111.5.{i}" for i in range(1, 21))
    assert sorted(a["address"] for a in server.db.private_addresses.find({"owner": "job-9"})) == [
        "172.16.0.1", "172.16.0.2"]
    # Owned addresses got their claims on the way in, as any write through our API does.
    assert server.db.address_claims.count_documents({}) == 2


def test_our_server_on_the_original_database_sees_its_machines_but_not_its_addresses(original, localdb,
                                                                                     users_file):
    _, old_db = original
    live = LiveServer({"MONGO_URI": localdb.uri, "MONGO_DBNAME": old_db.name, "USERS_FILE": users_file})
    try:
        api = live.session(ADMIN)
        listed = api.get("/machines").json()
        assert listed["_meta"] == {"total": MACHINES}
        machine = api.get("/machines/a-0001.qa1.eucalyptus-systems.com").json()
        assert machine["tags"]["memory"] == 17179869184
        changed = api.patch("/machines/a-0001.qa1.eucalyptus-systems.com", json={"owner": "ci"},
                            headers={"If-Match": machine["_etag"]})
        assert changed.status_code == 200
        # The original kept addresses in collections named public-addresses and private-addresses.
        assert api.get("/public-addresses").json()["_items"] == []
        assert old_db["public-addresses"].count_documents({}) == 21
    finally:
        live.stop()
