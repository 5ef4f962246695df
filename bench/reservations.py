"""Benchmarks 1 and 5: reserving machines and allocating addresses, against the original tool's way.

The original way: list idle machines (or unowned addresses), PATCH one with If-Match, retry on 412.
Each client is a thread with its own keep-alive session (the rates are low: the server is the limit).
Every run is bounded in time and in count, on 127.0.0.1.
"""

import collections
import ipaddress
import random
import threading
import time
import uuid

import requests

from .reads import seed_machines

OPERATOR = ("operator", "bench-operator-pw")


class Tally:
    """What the clients of one run got: successes, failures, retries, and who holds what."""

    def __init__(self):
        self.lock = threading.Lock()
        self.ok = 0
        self.failed = 0
        self.retried = 0
        self.holders = collections.defaultdict(set)  # item -> clients that were told they have it
        self.failures = collections.Counter()  # status code (or what went wrong) -> how often

    def add(self, client, items=(), ok=True, retried=0, why=None):
        with self.lock:
            self.retried += retried
            if ok:
                self.ok += 1
                for item in items:
                    self.holders[item].add(client)
            else:
                self.failed += 1
                self.failures[why] += 1

    def double_handed(self):
        return sum(1 for clients in self.holders.values() if len(clients) > 1)


def run_clients(clients, seconds, max_ops, step):
    """Run step(client, session, tally) in `clients` threads for `seconds`; return (tally, elapsed)."""
    tally = Tally()
    deadline = time.monotonic() + seconds
    budget = [max_ops]
    start_gate = threading.Barrier(clients + 1)

    def worker(number):
        with requests.Session() as session:
            session.auth = OPERATOR
            start_gate.wait(timeout=60)
            while time.monotonic() < deadline:
                with tally.lock:
                    if budget[0] <= 0:
                        return
                    budget[0] -= 1
                if step(number, session, tally) is False:
                    return

    threads = [threading.Thread(target=worker, args=(n,), daemon=True) for n in range(clients)]
    for thread in threads:
        thread.start()
    start_gate.wait(timeout=60)
    started = time.perf_counter()
    for thread in threads:
        thread.join(timeout=seconds + 120)
    return tally, time.perf_counter() - started


def _failures(counter):
    total = sum(counter.values())
    return f"{total} ({', '.join(f'{k}: {v}' for k, v in counter.items())})" if total else "0"


# 1. Machines.

def reserve_ours(url, group):
    def step(client, session, tally):
        response = session.post(f"{url}/reservations", timeout=60, json={
            "count": 1, "owner": f"c{client}", "job_id": f"bench-{client}-{uuid.uuid4().hex[:8]}",
            "where": {"tags.group": group}})
        if response.status_code == 201:
            tally.add(client, response.json()["hostnames"])
        elif response.status_code == 409:  # none left: the run is over for this client
            return False
        else:
            tally.add(client, ok=False, why=response.status_code)
        return None

    return step


def reserve_old_way(url, group, tries=20):
    where = f'{{"state": "idle", "tags.group": "{group}"}}'

    def step(client, session, tally):
        retried = 0
        for _ in range(tries):
            listing = session.get(f"{url}/machines", params={"where": where, "max_results": 25}, timeout=60)
            items = listing.json().get("_items", [])
            if not items:
                tally.add(client, ok=False, retried=retried, why="none idle")
                return False
            machine = random.choice(items)
            response = session.patch(f"{url}/machines/{machine['_id']}", timeout=60,
                                     json={"state": "in_use", "owner": f"c{client}", "job_id": f"bench-{client}"},
                                     headers={"If-Match": machine["_etag"]})
            if response.status_code == 200:
                tally.add(client, [machine["hostname"]], retried=retried)
                return None
            retried += 1  # 412: someone changed it since we listed; list again
        tally.add(client, ok=False, retried=retried, why="gave up")
        return None

    return step


def reserve(env, runs, clients=8, seconds=4.0, machines=600):
    """Reservations per second with `clients` clients, ours against list + PATCH If-Match."""
    ours, old = [], []
    failed = {"ours": collections.Counter(), "old": collections.Counter()}
    retried = {"ours": 0, "old": 0}
    double = {"ours": 0, "old": 0}
    for run in range(runs):
        db = env.database(f"bench_reserve_{clients}_{run}")
        hostnames = seed_machines(db, 2 * machines)
        db.machines.update_many({"hostname": {"$in": hostnames[:machines]}}, {"$set": {"tags.group": "a"}})
        db.machines.update_many({"hostname": {"$in": hostnames[machines:]}}, {"$set": {"tags.group": "b"}})
        url = env.api(db.name).url
        for label, step, results in (("ours", reserve_ours(url, "a"), ours), ("old", reserve_old_way(url, "b"), old)):
            tally, elapsed = run_clients(clients, seconds, machines, step)
            results.append(tally.ok / elapsed)
            failed[label] += tally.failures
            retried[label] += tally.retried
            double[label] += tally.double_handed()
        # Ours, checked in the database too: every reserved machine has exactly one claim.
        claimed = db.machine_claims.count_documents({}) if "machine_claims" in db.list_collection_names() else None
        in_use = db.machines.count_documents({"tags.group": "a", "state": "in_use"})
        assert claimed is None or claimed == in_use, (claimed, in_use)
        env.stop_api(db.name)
    notes = (f"ours: {double['ours']} double-handed, {_failures(failed['ours'])} failed, {retried['ours']} retried; "
             f"old way: {double['old']} machines double-handed, {_failures(failed['old'])} failed, "
             f"{retried['old']} retried (412) in {runs} runs")
    return {"name": f"reserve 1 machine, {clients} clients", "unit": "res/s", "ours": ours, "baseline": old,
            "baseline_name": "list idle + PATCH If-Match, retry on 412", "higher_is_better": True,
            "errors": 0, "notes": notes, "double_handed": double}


# 5. Addresses.

def allocate_ours(url, pool):
    def step(client, session, tally):
        response = session.post(f"{url}/address-pools/{pool}/allocate", json={"owner": f"c{client}", "count": 1},
                                timeout=60)
        if response.status_code == 201:
            tally.add(client, response.json()["addresses"])
        else:
            tally.add(client, ok=False, why=response.status_code)
            if response.status_code == 409:
                return False
        return None

    return step


def allocate_old_way(url, tries=20):
    def step(client, session, tally):
        retried = 0
        for _ in range(tries):
            listing = session.get(f"{url}/private-addresses", params={"where": '{"owner": null}', "max_results": 25},
                                  timeout=60)
            items = listing.json().get("_items", [])
            if not items:
                tally.add(client, ok=False, retried=retried, why="none unowned")
                return False
            item = random.choice(items)
            response = session.patch(f"{url}/private-addresses/{item['_id']}", json={"owner": f"c{client}"},
                                     headers={"If-Match": item["_etag"]}, timeout=60)
            if response.status_code == 200:
                tally.add(client, [item["address"]], retried=retried)
                return None
            retried += 1
        tally.add(client, ok=False, retried=retried, why="gave up")
        return None

    return step


def allocate(env, runs, clients=32, seconds=4.0, old_addresses=600):
    """Addresses allocated per second by `clients` clients from a /16 pool, against list + PATCH If-Match."""
    import datetime

    ours, old = [], []
    failed = {"ours": collections.Counter(), "old": collections.Counter()}
    retried = {"ours": 0, "old": 0}
    double = {"ours": 0, "old": 0}
    for run in range(runs):
        db = env.database(f"bench_allocate_{run}")
        url = env.api(db.name).url
        with requests.Session() as admin:
            admin.auth = ("admin", "bench-admin-pw")
            created = admin.post(f"{url}/address-pools", timeout=60,
                                 json={"name": "bench16", "cidr": "10.64.0.0/16", "kind": "private"})
            assert created.status_code == 201, created.text
        # The old way needs the addresses to exist, unowned, outside the pool.
        now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
        network = ipaddress.ip_network("10.99.0.0/16")
        db.private_addresses.insert_many([
            {"address": str(network[i + 2]), "owner": None, "tags": {}, "_created": now, "_updated": now,
             "_etag": uuid.uuid4().hex} for i in range(old_addresses)])
        for label, step, results in (("ours", allocate_ours(url, "bench16"), ours),
                                     ("old", allocate_old_way(url), old)):
            tally, elapsed = run_clients(clients, seconds, 5000, step)
            results.append(tally.ok / elapsed)
            failed[label] += tally.failures
            retried[label] += tally.retried
            double[label] += tally.double_handed()
        env.stop_api(db.name)
    notes = (f"/16 pool; ours: {double['ours']} double-handed, {_failures(failed['ours'])} failed; old way (unowned "
             f"addresses listed, PATCH owner): {double['old']} double-handed, {_failures(failed['old'])} failed, "
             f"{retried['old']} retried (412) in {runs} runs")
    return {"name": f"allocate 1 address, {clients} clients", "unit": "alloc/s", "ours": ours, "baseline": old,
            "baseline_name": "list unowned + PATCH If-Match, retry on 412", "higher_is_better": True,
            "errors": 0, "notes": notes, "double_handed": double}
