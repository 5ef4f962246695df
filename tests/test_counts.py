"""The counts kept beside the data (core/counts.py) stay exact under racing writes, and drift is found and mended.

The races run on two gunicorn processes over one database, their requests released together by a
barrier, many rounds; after every round the kept counters are compared with a real count of the
database (and rm-check's invariants, which include the counters, must hold). The pure parts
(the head's upkeep, the hint's runs) are checked against brute force with hypothesis.
"""

import ipaddress
import random
import threading

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st

from resource_manager.core import atomic, counts, pool_hints
from resource_manager.core.check import check
from resource_manager.core.ipranges import Runs, free_addresses, parse_pool, stored_ranges
from resource_manager.schema import MACHINE_STATES, natural_key

from .cluster import cluster_fixtures
from .support import ADMIN, OPERATOR, run_together

ROUNDS = 8
MACHINES = 24
CLIENTS = 16

shared, cluster = cluster_fixtures("counts")


def true_counts(db):
    """Machines by state and the lowest names, counted now; the pool's claims, counted now."""
    states = dict.fromkeys(MACHINE_STATES, 0)
    for row in db.machines.aggregate([{"$group": {"_id": "$state", "n": {"$sum": 1}}}]):
        states[row["_id"]] = row["n"]
    names = sorted((m["hostname"] for m in db.machines.find({}, {"hostname": 1})), key=natural_key)
    return {"total": sum(states.values()), "states": states}, names


def assert_kept_exact(db):
    kept = counts.machine_counts(db)
    found, names = true_counts(db)
    assert kept == found
    total = kept["total"]
    head, upto = counts.machine_head(db)
    assert [e["h"] for e in head] == names[:len(head)]
    assert upto is None and len(head) == total or upto is not None and all(
        natural_key(n) > natural_key(upto) for n in names[len(head):])
    for pool in db.address_pools.find():
        network = ipaddress.ip_network(pool["cidr"])
        claimed = [c for c in db.address_claims.find({"kind": pool["kind"]})
                   if ipaddress.ip_address(c["_id"].split("/", 1)[1]) in network]
        excluded = stored_ranges(pool)[1]
        usable = [c for c in claimed if not any(a <= int(ipaddress.ip_address(c["_id"].split("/", 1)[1])) <= b
                                                for a, b in excluded)]
        assert counts.pool_allocated(db, pool) == len(usable), pool["name"]
    assert check(db, grace=0) == []


class Client:
    """One racing client: a random write of its own kind, on a session of its own."""

    def __init__(self, urls, seed):
        self.urls, self.rng = urls, random.Random(seed)
        self.session = requests.Session()
        self.session.auth = OPERATOR

    def url(self):
        return self.rng.choice(self.urls)

    def machine(self):
        r = self.session.get(f"{self.url()}/machines/c{self.rng.randrange(MACHINES):02d}", timeout=60)
        return r.json() if r.status_code == 200 else None

    def step(self, i):
        op = self.rng.choice(("state", "state", "reserve", "release", "rename", "delete", "create", "bulk",
                              "allocate", "unown", "address"))
        return getattr(self, op)(i)

    def state(self, _i):
        m = self.machine()
        if m and m["state"] != "in_use":
            new = self.rng.choice([s for s in MACHINE_STATES if s not in ("in_use", m["state"])])
            return self.session.patch(f"{self.url()}/machines/{m['_id']}", json={"state": new},
                                      headers={"If-Match": m["_etag"]}, timeout=60).status_code
        return None

    def reserve(self, _i):
        return self.session.post(f"{self.url()}/reservations", json={"count": self.rng.choice((1, 2))},
                                 timeout=60).status_code

    def release(self, _i):
        r = self.session.get(f"{self.url()}/reservations", params={"state": "active"}, timeout=60)
        items = r.json().get("_items", [])
        if items:
            return self.session.delete(f"{self.url()}/reservations/{self.rng.choice(items)['_id']}",
                                       timeout=60).status_code
        return None

    def rename(self, _i):
        m = self.machine()
        if m:  # a new name sorts first or last: the head gains or loses a name
            new = ("a-" if self.rng.random() < 0.5 else "z-") + m["hostname"]
            return self.session.patch(f"{self.url()}/machines/{m['_id']}", json={"hostname": new},
                                      headers={"If-Match": m["_etag"]}, timeout=60).status_code
        return None

    def delete(self, _i):
        m = self.machine()
        if m:
            return self.session.delete(f"{self.url()}/machines/{m['_id']}", headers={"If-Match": m["_etag"]},
                                       timeout=60).status_code
        return None

    def create(self, _i):
        name = f"c{self.rng.randrange(MACHINES):02d}"  # often taken: 409, counted nowhere
        return self.session.post(f"{self.url()}/machines", json={"hostname": name, "state": "idle"},
                                 timeout=60).status_code

    def bulk(self, _i):
        names = {f"c{self.rng.randrange(MACHINES):02d}" for _ in range(3)} | {f"b{self.rng.randrange(1000):03d}"}
        docs = [{"hostname": n, "state": self.rng.choice(("idle", "pxe"))} for n in sorted(names)]
        return self.session.post(f"{self.url()}/machines", json=docs, timeout=60).status_code

    def allocate(self, _i):
        return self.session.post(f"{self.url()}/address-pools/race/allocate", json={"count": 2},
                                 timeout=60).status_code

    def unown(self, _i):
        r = self.session.get(f"{self.url()}/private-addresses", params={"where": '{"owner": {"$ne": null}}',
                                                                        "max_results": 50}, timeout=60)
        items = r.json().get("_items", [])
        if items:
            a = self.rng.choice(items)
            if self.rng.random() < 0.5:
                return self.session.delete(f"{self.url()}/private-addresses/{a['_id']}",
                                           headers={"If-Match": a["_etag"]}, timeout=60).status_code
            return self.session.patch(f"{self.url()}/private-addresses/{a['_id']}", json={"owner": None},
                                      headers={"If-Match": a["_etag"]}, timeout=60).status_code
        return None

    def address(self, _i):
        # A plain write giving an address of the pool (or one it excludes) an owner: counted, or not.
        host = self.rng.choice((1, 5, 9, 20, 33, 40))
        return self.session.post(f"{self.url()}/private-addresses", json={"address": f"10.66.0.{host}",
                                                                          "owner": "plain"}, timeout=60).status_code


def test_counts_stay_exact_under_racing_writes_on_two_servers(cluster):
    cluster, db = cluster
    urls = cluster.urls
    with requests.Session() as s:
        s.auth = ADMIN
        docs = [{"hostname": f"c{i:02d}", "state": "idle"} for i in range(MACHINES)]
        assert s.post(urls[0] + "/machines", json=docs, timeout=60).status_code == 201
        assert s.post(urls[0] + "/address-pools", timeout=60, json={
            "name": "race", "cidr": "10.66.0.0/26", "kind": "private", "exclude": ["10.66.0.5"]}).status_code == 201
    assert_kept_exact(db)
    clients = [Client(urls, seed) for seed in range(CLIENTS)]
    for _round in range(ROUNDS):
        codes = run_together(CLIENTS, lambda i: clients[i].step(i))
        assert all(code is None or code < 500 for code in codes), codes
        assert_kept_exact(db)


def test_a_recount_racing_writers_mends_drift_without_stopping_them(cluster):
    cluster, db = cluster
    urls = cluster.urls
    with requests.Session() as s:
        s.auth = ADMIN
        docs = [{"hostname": f"c{i:02d}", "state": "idle"} for i in range(MACHINES)]
        assert s.post(urls[0] + "/machines", json=docs, timeout=60).status_code == 201
    # Drift, as a crash between a write and its $inc on MongoDB, or a raw write, would leave.
    db.counts.update_one({"_id": "machines"}, {"$inc": {"states.idle": 5, "total": 5}})
    drift = check(db, grace=0)
    assert {(v["invariant"], v["detail"]) for v in drift} == {
        ("counts", "total: kept 29, counted 24"), ("counts", "states.idle: kept 29, counted 24")}
    # The servers' own lock (same database, same lock directory): the recount reads one snapshot.
    locked = atomic.detect(db).wrap(db)
    clients = [Client(urls, 100 + seed) for seed in range(CLIENTS)]
    stop = threading.Event()
    found = []

    def recount():
        while not stop.is_set():
            found.append(counts.recount(locked))

    for _round in range(3):
        stop.clear()
        thread = threading.Thread(target=recount)
        thread.start()
        try:
            for _burst in range(4):
                codes = run_together(CLIENTS, lambda i: clients[i].state(i) if i % 2 else clients[i].reserve(i))
                assert all(code is None or code < 500 for code in codes), codes
        finally:
            stop.set()
            thread.join(120)
        assert_kept_exact(db)
    assert found[0] is not None and {d["field"] for d in found[0]} == {"total", "states.idle"}
    assert all(f == [] for f in found[1:] if f is not None), found  # mended once, exact after


def test_the_sweep_mends_counters_written_around_and_readers_count_until_then(server, operator, anon, admin):
    docs = [{"hostname": f"m{i:02d}", "state": "idle"} for i in range(12)]
    assert operator.post("/machines", json=docs).status_code == 201
    server.db.machines.update_many({"hostname": {"$in": ["m00", "m01"]}}, {"$set": {"state": "needs_repair"}})
    idle = {"max_results": 1, "where": '{"state": "idle"}'}
    assert anon.get("/machines", params=idle).json()["_meta"]["total"] == 12  # kept: a raw write does not move it
    # The field filter ?state= is answered from the same counter; with another condition too, it is counted.
    assert anon.get("/machines", params={"max_results": 1, "state": "idle"}).json()["_meta"]["total"] == 12
    assert anon.get("/machines", params={"max_results": 1, "state": "idle",
                                         "where": '{"hostname": {"$ne": "x"}}'}).json()["_meta"]["total"] == 10
    assert [v["detail"] for v in check(server.db, grace=0)] == ["states.idle: kept 12, counted 10",
                                                                "states.needs_repair: kept 0, counted 2"]
    swept = admin.post("/reservations/sweep?grace=0")
    assert swept.status_code == 200 and swept.json()["repaired"] == 2
    assert anon.get("/machines", params=idle).json()["_meta"]["total"] == 10
    server.db.counts.delete_many({})  # no counters at all: every reader counts, as before them
    assert anon.get("/machines", params={"max_results": 1}).json()["_meta"]["total"] == 12
    assert check(server.db, grace=0) == []
    assert admin.post("/reservations/sweep?grace=0").json()["repaired"] == 0  # built, not mended
    assert counts.machine_counts(server.db) == {"total": 12, "states": dict.fromkeys(MACHINE_STATES, 0) | {
        "idle": 10, "needs_repair": 2}}


def test_the_dashboard_shows_a_new_first_machine_at_once(server, operator):
    docs = [{"hostname": f"m{i:03d}", "state": "idle"} for i in range(60)]
    assert operator.post("/machines", json=docs).status_code == 201
    html = server.session().get("/", headers={"Accept": "text/html"}).text
    assert "m000" in html and "m049" in html and "m050" not in html
    assert operator.post("/machines", json={"hostname": "a-first", "state": "pxe"}).status_code == 201
    assert operator.write("DELETE", "/machines/m001").status_code == 204
    html = server.session().get("/", headers={"Accept": "text/html"}).text
    # Not 10 s later, as a cached order would: the kept head is current.
    assert html.index("a-first") < html.index("m000") and "m001" not in html and "m049" in html


def test_pool_utilisation_is_kept_and_a_raw_claim_is_found_then_mended(server, operator, admin, anon):
    assert admin.post("/address-pools", json={"name": "p", "cidr": "10.9.0.0/24", "kind": "private",
                                               "exclude": ["10.9.0.200-10.9.0.210"]}).status_code == 201
    assert operator.post("/address-pools/p/allocate", json={"count": 5}).status_code == 201
    assert operator.post("/private-addresses", json={"address": "10.9.0.150", "owner": "x"}).status_code == 201
    assert operator.post("/private-addresses", json={"address": "10.9.0.205", "owner": "x"}).status_code == 201
    assert operator.write("PATCH", "/private-addresses/10.9.0.3", json={"owner": None}).status_code == 200
    assert anon.get("/address-pools/p").json()["utilisation"] == {"size": 242, "allocated": 5, "free": 237}
    server.db.address_claims.insert_one({"_id": "private/10.9.0.77", "kind": "private", "ipkey": "x",
                                         "holder": "raw", "at": server.db.address_pools.find_one()["_created"]})
    assert anon.get("/address-pools/p").json()["utilisation"]["allocated"] == 5
    assert ("counts", "allocated: kept 5, counted 6") in {
        (v["invariant"], v["detail"].split("/")[-1]) for v in check(server.db, grace=0)}
    assert admin.post("/reservations/sweep?grace=0").status_code == 200  # drops the claim: no owner
    assert anon.get("/address-pools/p").json()["utilisation"]["allocated"] == 5
    assert check(server.db, grace=0) == []


# The pure parts, against brute force.

NAMES = st.text(alphabet="ab019", min_size=1, max_size=3)  # digits: the head is in natural order (a9 < a10)


@settings(max_examples=300, deadline=None)
@given(start=st.lists(NAMES, unique=True, max_size=12), ops=st.lists(
    st.tuples(st.sampled_from(("add", "drop", "rename")), NAMES, NAMES), max_size=30))
def test_the_head_stays_a_prefix_of_the_order_whatever_the_writes(monkeypatch_module, start, ops):
    machines = {name: i for i, name in enumerate(start)}  # hostname -> _id
    everything = [{"hostname": n, "_id": i} for n, i in machines.items()]
    head = sorted(({"h": d["hostname"], "i": d["_id"]} for d in everything), key=lambda e: natural_key(e["h"]))
    upto = None if len(head) <= counts.HEAD_SIZE else head[counts.HEAD_SIZE - 1]["h"]
    head = head[:counts.HEAD_SIZE]
    next_id = 1000
    for op, a, b in ops:
        if op == "add" and a not in machines:
            machines[a] = next_id
            head, upto = counts._new_head(head, upto, set(), [{"hostname": a, "_id": next_id}])
            next_id += 1
        elif op == "drop" and a in machines:
            head, upto = counts._new_head(head, upto, {machines.pop(a)}, [])
        elif op == "rename" and a in machines and b not in machines:
            machines[b] = machines.pop(a)
            head, upto = counts._new_head(head, upto, {machines[b]}, [{"hostname": b, "_id": machines[b]}])
        names = sorted(machines, key=natural_key)
        assert [e["h"] for e in head] == names[:len(head)]
        assert [e["i"] for e in head] == [machines[n] for n in names[:len(head)]]
        assert len(head) <= counts.HEAD_SIZE
        if upto is None:
            assert len(head) == len(names)
        else:
            assert all(natural_key(n) > natural_key(upto) for n in names[len(head):])


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(counts, "HEAD_SIZE", 4)  # small, so that the bound is reached and crossed
        yield mp


@settings(max_examples=300, deadline=None)
@given(taken=st.sets(st.integers(0, 255), max_size=200), prefix=st.sampled_from((24, 25, 28)))
def test_the_hint_reads_runs_that_are_exactly_its_bits(taken, prefix):
    network = ipaddress.ip_network(f"10.1.2.0/{prefix}")
    base = int(network.network_address)
    numbers = sorted(base + n for n in taken if n < network.num_addresses)
    bits = bytearray((network.num_addresses + 7) // 8)
    pool_hints._set(bits, network, numbers, True)
    runs = Runs(pool_hints._runs(bits, base))
    assert list(runs) == numbers and len(runs) == len(numbers)
    excluded = parse_pool(str(network), [])[1]
    assert list(free_addresses(network, excluded, runs)) == list(free_addresses(network, excluded, numbers))
