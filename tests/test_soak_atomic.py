"""Soak (make soak): random interleavings of every write route, plain and allocation, on two server processes.

Workers pick writes at random for SOAK_SECONDS (default 60): PATCH, PUT, rename, DELETE and
re-create of machines; reserve, extend, release (by id and by job); address allocation, hand-back
and delete; the sweep. Each worker owns one tag key and counts in it, so the last value each
acknowledged is known. Afterwards rm-check's invariants must hold with every acknowledged value.
"""

import collections
import os
import random
import threading
import time

import pytest
import requests

from resource_manager.core.check import check

from .cluster import cluster_fixtures, emptied
from .support import ADMIN, OPERATOR, run_together

WORKERS = 12
MACHINES = 30


shared, _cluster = cluster_fixtures("soak")


class Worker:
    """One client: random writes, and what the server acknowledged."""

    def __init__(self, i, urls, stats, lock):
        self.i, self.urls, self.stats, self.lock = i, urls, stats, lock
        self.rng = random.Random(i)
        self.session = requests.Session()
        self.session.auth = OPERATOR
        self.tags = {}      # machine _id -> last acknowledged value of tags.w<i>
        self.released = []  # reservations whose release answered with machines
        self.held = []
        self.counter = 0

    def request(self, method, path, **kwargs):
        r = self.session.request(method, self.rng.choice(self.urls) + path, timeout=60, **kwargs)
        with self.lock:
            self.stats[f"{method} {path.split('/')[1].split('?')[0]} {r.status_code}"] += 1
        assert r.status_code < 500, (method, path, r.status_code, r.text)
        return r

    def machine(self):
        r = self.request("GET", f"/machines?where={{\"hostname\":\"s{self.rng.randrange(MACHINES):02d}\"}}")
        items = r.json()["_items"]
        return items[0] if items else None

    def step(self):
        op = self.rng.choice(("tag", "tag", "state", "put", "rename", "delete", "reserve", "reserve",
                              "release", "extend", "job", "allocate", "unown", "sweep"))
        getattr(self, op)()

    def tag(self):
        m = self.machine()
        if m:
            self.counter += 1
            r = self.request("PATCH", f"/machines/{m['_id']}", json={"tags": {f"w{self.i}": self.counter}},
                             headers={"If-Match": m["_etag"]})
            if r.status_code == 200:
                self.tags[m["_id"]] = self.counter

    def state(self):
        m = self.machine()
        if m and m["state"] in ("idle", "needs_repair"):
            new = "needs_repair" if m["state"] == "idle" else "idle"
            self.request("PATCH", f"/machines/{m['_id']}", json={"state": new}, headers={"If-Match": m["_etag"]})

    def put(self):
        m = self.machine()
        if m and m["state"] == "idle":
            body = {k: m[k] for k in ("hostname", "state", "owner", "job_id", "tags") if k in m}
            r = self.request("PUT", f"/machines/{m['_id']}", json=body, headers={"If-Match": m["_etag"]})
            if r.status_code == 200:
                self.tags.pop(m["_id"], None)  # PUT may write back others' older tags; ours are in `body`
                if f"w{self.i}" in (m.get("tags") or {}):
                    self.tags[m["_id"]] = m["tags"][f"w{self.i}"]

    def rename(self):
        m = self.machine()
        if m:
            self.request("PATCH", f"/machines/{m['_id']}", json={"hostname": f"{m['hostname']}x"[:60]},
                         headers={"If-Match": m["_etag"]})
            # and back, so the pool of names stays
            fresh = self.request("GET", f"/machines/{m['_id']}")
            if fresh.status_code == 200:
                doc = fresh.json()
                self.request("PATCH", f"/machines/{m['_id']}", json={"hostname": m["hostname"]},
                             headers={"If-Match": doc["_etag"]})

    def delete(self):
        m = self.machine()
        if m:
            r = self.request("DELETE", f"/machines/{m['_id']}", headers={"If-Match": m["_etag"]})
            if r.status_code == 204:
                self.tags.pop(m["_id"], None)
                self.request("POST", "/machines", json={"hostname": m["hostname"], "state": "idle"})

    def reserve(self):
        body = {"count": self.rng.randint(1, 3), "job_id": f"j{self.i}", "lease_seconds": self.rng.choice([60, 600])}
        if self.rng.random() < 0.3:
            body["where"] = {"hostname": f"s{self.rng.randrange(MACHINES):02d}"}
            body["count"] = 1
        r = self.request("POST", "/reservations", json=body)
        if r.status_code == 201:
            self.held.append(r.json()["_id"])

    def release(self):
        if self.held:
            rid = self.held.pop(self.rng.randrange(len(self.held)))
            r = self.request("DELETE", f"/reservations/{rid}")
            if r.status_code == 200 and r.json()["released"]:
                self.released.append(rid)

    def extend(self):
        if self.held:
            self.request("POST", f"/reservations/{self.rng.choice(self.held)}/extend", json={"lease_seconds": 900})

    def job(self):
        r = self.request("DELETE", f"/reservations?job_id=j{self.i}")
        if r.status_code == 200:
            self.released += r.json()["reservations"]
            self.held = []

    def allocate(self):
        self.request("POST", "/address-pools/soak/allocate", json={"owner": f"w{self.i}", "count": 1})

    def unown(self):
        r = self.request("GET", f'/private-addresses?where={{"owner":"w{self.i}"}}')
        for doc in r.json()["_items"][:1]:
            if self.rng.random() < 0.5:
                self.request("DELETE", f"/private-addresses/{doc['_id']}", headers={"If-Match": doc["_etag"]})
            else:
                self.request("PATCH", f"/private-addresses/{doc['_id']}", json={"owner": None},
                             headers={"If-Match": doc["_etag"]})

    def sweep(self):
        self.request("POST", "/reservations/sweep")


@pytest.mark.slow
def test_random_interleavings_of_every_write_route_keep_every_invariant(shared):
    cluster, db = emptied(shared)
    urls = cluster.urls
    seconds = float(os.environ.get("SOAK_SECONDS", "60"))
    with requests.Session() as s:
        s.auth = ADMIN
        docs = [{"hostname": f"s{i:02d}", "state": "idle"} for i in range(MACHINES)]
        assert s.post(urls[0] + "/machines", json=docs, timeout=60).status_code == 201
        assert s.post(urls[0] + "/address-pools", timeout=60,
                      json={"name": "soak", "cidr": "10.77.0.0/26", "kind": "private"}).status_code == 201
    stats, lock = collections.Counter(), threading.Lock()
    workers = [Worker(i, urls, stats, lock) for i in range(WORKERS)]
    deadline = time.monotonic() + seconds
    steps = [0] * WORKERS

    def work(i):
        while time.monotonic() < deadline and steps[i] < 100_000:
            workers[i].step()
            steps[i] += 1

    started = time.monotonic()
    run_together(WORKERS, work)
    elapsed = time.monotonic() - started
    expected = [("machines", mid, f"tags.w{w.i}", value) for w in workers for mid, value in w.tags.items()
                if db.machines.count_documents({"_id": mid}) == 1]
    expected += [("reservations", rid, "state", "released") for w in workers for rid in w.released]
    violations = check(db, grace=0, expected=expected)
    print(f"\nsoak: {sum(steps)} operations, {sum(stats.values())} requests in {elapsed:.0f} s on 2 servers, "
          f"{len(expected)} acknowledged values checked, {len(violations)} violations")
    print("soak answers:", dict(sorted(stats.items())))
    assert violations == []
