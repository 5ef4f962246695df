"""Plain writes racing each other and the allocator, on two server processes over the default engine.

Each test is one scenario of issue 9: its requests are released together by a barrier, several
races at once per round, over several rounds; after every round the database is read by rm-check's
invariants (resource_manager/check.py), with the values of every acknowledged write.
"""

import datetime
import os
import re
import subprocess
import sys

import requests

from resource_manager.core.check import check

from .cluster import cluster_fixtures
from .support import ADMIN, OPERATOR, run_together

ROUNDS = 6
RACES = 4  # independent races per round, all released together


shared, cluster = cluster_fixtures("atomic")


def call(url, method, path, auth=OPERATOR, **kwargs):
    """Send one request on a session of its own; return (status, JSON body or None)."""
    with requests.Session() as s:
        s.auth = auth
        r = s.request(method, url + path, timeout=60, **kwargs)
    try:
        return r.status_code, r.json()
    except ValueError:
        return r.status_code, None


def add(url, names, **fields):
    status, body = call(url, "POST", "/machines", json=[dict({"hostname": n, "state": "idle"}, **fields)
                                                         for n in names])
    assert status == 201, body


def etag(url, path):
    status, body = call(url, "GET", path)
    assert status == 200, body
    return body["_etag"]


def fresh_machines(url, prefix, round_):
    """Create this round's idle machines; return their names and current etags."""
    names = [f"{prefix}{round_}-{i}" for i in range(RACES)]
    add(url, names)
    return names, {n: etag(url, f"/machines/{n}") for n in names}


def reserve_only(name, **extra):
    return {"json": dict({"count": 1, "where": {"hostname": name}}, **extra)}


def assert_sound(db, expected=()):
    assert check(db, grace=0, expected=expected) == []


def test_two_patches_with_one_if_match_one_wins_and_the_other_gets_412(cluster):
    cluster, db = cluster
    urls = cluster.urls
    for round_ in range(ROUNDS):
        names, etags = fresh_machines(urls[0], "p", round_)
        bodies = [{"owner": "patcher"}, {"tags": {"patched": round_}}]

        def patch(i, names=names, etags=etags, bodies=bodies):
            name = names[i // 2]
            return call(urls[i % 2], "PATCH", f"/machines/{name}", json=bodies[i % 2],
                        headers={"If-Match": etags[name]})[0]

        codes = run_together(2 * RACES, patch)
        expected = []
        for k, name in enumerate(names):
            pair = codes[2 * k: 2 * k + 2]
            assert sorted(pair) == [200, 412], (name, pair)
            doc = db.machines.find_one({"hostname": name})
            won = pair.index(200)
            field, value = ("owner", "patcher") if won == 0 else ("tags.patched", round_)
            lost_field, lost_value = ("tags.patched", round_) if won == 0 else ("owner", "patcher")
            expected.append(("machines", doc["_id"], field, value))
            assert check(db, 0, [("machines", doc["_id"], lost_field, lost_value)]) != [], "the 412 was stored"
        assert_sound(db, expected)


def test_a_rename_racing_reservations_never_gives_one_machine_two_holders(cluster):
    cluster, db = cluster
    urls = cluster.urls
    for round_ in range(ROUNDS):
        names, etags = fresh_machines(urls[0], "r", round_)

        def race(i, names=names, etags=etags):
            name = names[i // 3]
            if i % 3 == 0:
                return call(urls[0], "PATCH", f"/machines/{name}", json={"hostname": name + "-new"},
                            headers={"If-Match": etags[name]})
            return call(urls[i % 2], "POST", "/reservations",
                        json={"count": 1, "where": {"hostname": {"$in": [name, name + "-new"]}}})

        results = run_together(3 * RACES, race)
        expected = []
        for k, name in enumerate(names):
            rename, *reservations = results[3 * k: 3 * k + 3]
            granted = [body for status, body in reservations if status == 201]
            assert len(granted) <= 1, (name, reservations)
            assert all(status in (201, 409) for status, _ in reservations), reservations
            assert rename[0] in (200, 409, 412), rename
            doc = db.machines.find_one({"hostname": {"$in": [name, name + "-new"]}})
            if rename[0] == 200:
                expected.append(("machines", doc["_id"], "hostname", name + "-new"))
            if granted:
                expected.append(("machines", doc["_id"], "reservation", granted[0]["_id"]))
        assert_sound(db, expected)


def test_needs_repair_racing_a_reservation_has_one_winner(cluster):
    cluster, db = cluster
    urls = cluster.urls
    for round_ in range(ROUNDS):
        names, etags = fresh_machines(urls[0], "n", round_)

        def race(i, names=names, etags=etags):
            name = names[i // 2]
            if i % 2 == 0:
                return call(urls[0], "PATCH", f"/machines/{name}", json={"state": "needs_repair"},
                            headers={"If-Match": etags[name]})[0]
            return call(urls[1], "POST", "/reservations", **reserve_only(name))[0]

        codes = run_together(2 * RACES, race)
        for k, name in enumerate(names):
            patch, reservation = codes[2 * k: 2 * k + 2]
            assert (patch, reservation) in ((200, 409), (409, 201), (412, 201)), (name, patch, reservation)
            state = db.machines.find_one({"hostname": name})["state"]
            assert state == ("needs_repair" if patch == 200 else "in_use")
        assert_sound(db)


def test_delete_racing_a_reservation_has_one_winner(cluster):
    cluster, db = cluster
    urls = cluster.urls
    for round_ in range(ROUNDS):
        names, etags = fresh_machines(urls[0], "d", round_)

        def race(i, names=names, etags=etags):
            name = names[i // 2]
            if i % 2 == 0:
                return call(urls[0], "DELETE", f"/machines/{name}", headers={"If-Match": etags[name]})[0]
            return call(urls[1], "POST", "/reservations", **reserve_only(name))[0]

        codes = run_together(2 * RACES, race)
        for k, name in enumerate(names):
            delete, reservation = codes[2 * k: 2 * k + 2]
            assert (delete, reservation) in ((204, 409), (409, 201), (412, 201)), (name, delete, reservation)
            assert (db.machines.count_documents({"hostname": name}) == 1) == (reservation == 201)
        assert_sound(db)


def test_extend_racing_release_never_brings_the_reservation_back(cluster):
    cluster, db = cluster
    urls = cluster.urls
    for round_ in range(ROUNDS):
        names = [f"e{round_}-{i}" for i in range(RACES)]
        add(urls[0], names)
        rids = []
        for name in names:
            status, body = call(urls[0], "POST", "/reservations", **reserve_only(name, lease_seconds=600))
            assert status == 201, body
            rids.append(body["_id"])

        def race(i, rids=rids):
            rid = rids[i // 2]
            if i % 2 == 0:
                return call(urls[0], "POST", f"/reservations/{rid}/extend", json={"lease_seconds": 3600})
            return call(urls[1], "DELETE", f"/reservations/{rid}")

        results = run_together(2 * RACES, race)
        for k, rid in enumerate(rids):
            (extend, _), (release, released) = results[2 * k: 2 * k + 2]
            assert extend in (200, 409) and release == 200, (extend, release)
            assert released["released"] == [names[k]]
            assert db.reservations.find_one({"_id": rid})["state"] == "released"
            assert db.machines.find_one({"hostname": names[k]})["state"] == "idle"
        assert_sound(db)


def test_tags_patch_racing_reserve_and_release_loses_nothing(cluster):
    cluster, db = cluster
    urls = cluster.urls
    for round_ in range(ROUNDS):
        names = [f"t{round_}-{i}" for i in range(2 * RACES)]
        add(urls[0], names)
        held = {}
        for name in names[RACES:]:  # the second half is reserved already: these race a release
            status, body = call(urls[0], "POST", "/reservations", **reserve_only(name))
            assert status == 201, body
            held[name] = body["_id"]
        etags = {n: etag(urls[0], f"/machines/{n}") for n in names}

        def race(i, names=names, etags=etags, held=held, round_=round_):
            name = names[i // 2]
            if i % 2 == 0:
                return call(urls[0], "PATCH", f"/machines/{name}", json={"tags": {"round": round_}},
                            headers={"If-Match": etags[name]})[0]
            if name in held:
                return call(urls[1], "DELETE", f"/reservations/{held[name]}")[0]
            return call(urls[1], "POST", "/reservations", **reserve_only(name))[0]

        codes = run_together(4 * RACES, race)
        expected = []
        for k, name in enumerate(names):
            patch, other = codes[2 * k: 2 * k + 2]
            doc = db.machines.find_one({"hostname": name})
            assert patch in (200, 412), patch
            if patch == 200:
                expected.append(("machines", doc["_id"], "tags.round", round_))
            if name in held:
                assert other == 200
                expected += [("machines", doc["_id"], "state", "idle"), ("reservations", held[name], "state",
                                                                          "released")]
            else:
                assert other in (201, 409), other
                expected.append(("machines", doc["_id"], "state", "in_use" if other == 201 else "idle"))
        assert_sound(db, expected)


def test_address_tags_patch_racing_its_allocation_keeps_the_owner(cluster):
    cluster, db = cluster
    urls = cluster.urls
    for round_ in range(ROUNDS):
        pools = [f"pool{round_}-{i}" for i in range(RACES)]
        firsts = [f"10.{round_}.{i}.2" for i in range(RACES)]
        for i, (pool, first) in enumerate(zip(pools, firsts, strict=True)):
            status, body = call(urls[0], "POST", "/address-pools", auth=ADMIN,
                                json={"name": pool, "cidr": f"10.{round_}.{i}.0/28", "kind": "private"})
            assert status == 201, body
            assert call(urls[0], "POST", "/private-addresses", json={"address": first})[0] == 201
        etags = {a: etag(urls[0], f"/private-addresses/{a}") for a in firsts}

        def race(i, pools=pools, firsts=firsts, etags=etags, round_=round_):
            k = i // 2
            if i % 2 == 0:
                return call(urls[0], "PATCH", f"/private-addresses/{firsts[k]}", json={"tags": {"r": round_}},
                            headers={"If-Match": etags[firsts[k]]})
            return call(urls[1], "POST", f"/address-pools/{pools[k]}/allocate", json={"owner": f"vm{k}"})

        results = run_together(2 * RACES, race)
        expected = []
        for k, first in enumerate(firsts):
            (patch, _), (allocate, body) = results[2 * k: 2 * k + 2]
            assert patch in (200, 412) and allocate == 201, (patch, allocate, body)
            assert body["addresses"] == [first]
            doc = db.private_addresses.find_one({"address": first})
            expected.append(("private_addresses", doc["_id"], "owner", f"vm{k}"))
            if patch == 200:
                expected.append(("private_addresses", doc["_id"], "tags.r", round_))
        assert_sound(db, expected)
        # Each pool's first address is held: the next allocation gets the second one, never the first again.
        for k, pool in enumerate(pools):
            status, body = call(urls[k % 2], "POST", f"/address-pools/{pool}/allocate", json={"owner": "next"})
            assert (status, body["addresses"]) == (201, [f"10.{round_}.{k}.3"])


def test_bulk_posts_sharing_a_new_hostname_store_all_or_nothing(cluster):
    cluster, db = cluster
    urls = cluster.urls
    for round_ in range(ROUNDS):
        def race(i, round_=round_):
            shared = f"shared{round_}-{i // 2}"
            own = [f"b{round_}-{i}-{j}" for j in range(3)]
            docs = [{"hostname": h, "state": "idle"} for h in own[:2] + [shared] + own[2:]]
            return own, call(urls[i % 2], "POST", "/machines", json=docs)[0]

        results = run_together(2 * RACES, race)
        stored = {m["hostname"] for m in db.machines.find()}
        created = {h["name"] for h in db.history.find({"action": "create"})}
        for k in range(RACES):
            pair = results[2 * k: 2 * k + 2]
            codes = sorted(code for _own, code in pair)
            assert codes in ([201, 409], [201, 422]), codes
            for own, code in pair:
                assert (set(own) <= stored) == (code == 201) and (set(own) & stored == set()) == (code != 201)
                assert (set(own) <= created) == (code == 201)
            assert f"shared{round_}-{k}" in stored
        assert_sound(db)


def test_overlapping_pools_created_at_once_one_is_refused(cluster):
    cluster, db = cluster
    urls = cluster.urls
    for round_ in range(ROUNDS):
        def race(i, round_=round_):
            net = f"10.{100 + round_}.{i // 2}"
            cidr = f"{net}.0/24" if i % 2 == 0 else f"{net}.128/25"
            return call(urls[i % 2], "POST", "/address-pools", auth=ADMIN,
                        json={"name": f"o{round_}-{i}", "cidr": cidr, "kind": "public"})

        results = run_together(2 * RACES, race)
        for k in range(RACES):
            codes = sorted(status for status, _ in results[2 * k: 2 * k + 2])
            assert codes == [201, 409], results[2 * k: 2 * k + 2]
        assert db.address_pools.count_documents({"name": {"$regex": f"^o{round_}-"}}) == RACES


def run_check(uri, dbname, *args):
    env = dict(os.environ, MONGO_URI=uri, RM_MONGO_DBNAME=dbname, DO_NOT_TRACK="1")
    rm_check = os.path.join(os.path.dirname(sys.executable), "rm-check")  # the installed console script
    return subprocess.run([rm_check, *args], env=env, capture_output=True, text=True, timeout=120)


def test_the_sweep_repairs_what_rm_check_calls_repairable(cluster, localdb):
    cluster, db = cluster
    url = cluster.urls[0]
    add(url, [f"c{i}" for i in range(6)])
    ids = {m["hostname"]: m["_id"] for m in db.machines.find()}
    long_ago = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(hours=1)
    # A reserver that died after its first machine, a claim of a reservation that never was, a claim
    # keyed by hostname (as before 1.1), a machine naming a ghost, an owned address without its claim.
    db.reservations.insert_one({"_id": "dead", "state": "pending", "owner": "x", "job_id": "j", "count": 2,
                                "where": "{}", "hostnames": [], "machine_ids": [], "_created": long_ago,
                                "_updated": long_ago, "user": "operator"})
    db.machine_claims.insert_one({"_id": ids["c0"], "hostname": "c0", "holder": "dead", "at": long_ago})
    db.machines.update_one({"hostname": "c0"}, {"$set": {"state": "in_use", "reservation": "dead"}})
    db.machine_claims.insert_one({"_id": ids["c1"], "hostname": "c1", "holder": "never", "at": long_ago})
    db.machine_claims.insert_one({"_id": "c2", "holder": "never", "at": long_ago})
    db.machines.update_one({"hostname": "c3"}, {"$set": {"state": "in_use", "reservation": "ghost"}})
    db.public_addresses.insert_one({"address": "192.0.2.9", "owner": "someone"})

    found = check(db, grace=0)
    assert {(v["invariant"], v["item"]) for v in found} == {
        ("half-done", "reservation dead"), ("one-holder", "machine c1"), ("one-holder", "claim c2"),
        ("in-use-reserved", "machine c3"), ("address-claimed", "public address 192.0.2.9")}
    assert all(v["repairable"] for v in found)
    cli = run_check(localdb.uri, db.name, "--grace", "0")
    assert cli.returncode == 3 and len(cli.stdout.splitlines()) == 5, cli
    assert cli.stderr.strip().splitlines()[-1] == "rm-check: 5 violation(s)"

    status, swept = call(url, "POST", "/reservations/sweep?grace=0", auth=ADMIN)
    assert status == 200 and sorted(swept["released"]) == ["c0", "c3"], swept
    assert check(db, grace=0) == []
    assert run_check(localdb.uri, db.name, "--grace", "0").returncode == 0
    # What no sweep can mend is reported for an operator: a reservation whose machine was deleted behind its back.
    status, res = call(url, "POST", "/reservations", **reserve_only("c4"))
    assert status == 201
    db.machines.delete_one({"hostname": "c4"})
    assert [(v["invariant"], v["repairable"]) for v in check(db, grace=0)] == [("reserved-machine", False)]


def test_healthz_says_how_writes_are_made_atomic(anon):
    body = anon.get("/healthz").json()
    assert (body["engine"], body["writes"]) == ("ferretdb", "serialised by a PostgreSQL advisory lock")
    assert (body["write_lock"], body["write_lock_scope"]) == ("postgresql-advisory", "database")


def test_healthz_names_the_engines_version(anon):
    # The version of FerretDB built in, as go.mod pins it (it said "unknown": embedded, FerretDB cannot tell).
    go_mod = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "resource_manager", "localdb",
                          "go.mod")
    with open(go_mod, encoding="utf-8") as fh:
        pinned = re.search(r"^require github\.com/FerretDB/FerretDB (v\S+)$", fh.read(), re.M).group(1)
    assert anon.get("/healthz").json()["engine_version"] == pinned == "v1.24.2"
