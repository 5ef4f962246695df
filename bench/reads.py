"""Benchmarks 2 and 3: GET /machines/<hostname> and listing every machine, against the raw driver."""

import random
import time

import pymongo
import requests

from tests.support import seed_machines  # noqa: F401 (re-exported for the benchmarks)

from .load import throughput

TAGS = {"memory": 17179869184, "cpucores": 8, "arch": "x86_64"}




# Client set-ups for bench.load.throughput: each returns the one operation its process repeats.

def api_get_machine(url, hostnames):
    session = requests.Session()
    rng = random.Random()

    def once():
        response = session.get(f"{url}/machines/{rng.choice(hostnames)}", timeout=30)
        if response.status_code != 200:
            raise RuntimeError(response.status_code)
        response.json()

    return once


def raw_find_one(uri, dbname, hostnames):
    client = pymongo.MongoClient(uri)
    coll = client[dbname].machines
    rng = random.Random()

    def once():
        if coll.find_one({"hostname": rng.choice(hostnames)}) is None:
            raise RuntimeError("not found")

    return once


def get_by_hostname(env, runs, clients=8, seconds=3.0):
    """Requests per second of GET /machines/<hostname>, against find_one on the same database."""
    db = env.database("bench_get")
    hostnames = seed_machines(db, 1000)
    api, raw, errors = [], [], 0
    for _ in range(runs):  # interleaved, so that drift hits both alike
        rate, err = throughput(api_get_machine, (env.api(db.name).url, hostnames), clients, seconds)
        api.append(rate)
        errors += err
        rate, err = throughput(raw_find_one, (env.uri, db.name, hostnames), clients, seconds)
        raw.append(rate)
        errors += err
    return {"name": f"GET /machines/<hostname>, {clients} clients", "unit": "req/s", "ours": api,
            "baseline": raw, "baseline_name": "pymongo find_one({'hostname'})", "higher_is_better": True,
            "errors": errors, "notes": "1,000 machines"}


def list_all(env, runs, count=10_000, page_size=1000):
    """Seconds to list `count` machines through every API page, against the driver fetching them all."""
    db = env.database("bench_list")
    seed_machines(db, count)
    url = env.api(db.name).url
    api, raw = [], []
    client = pymongo.MongoClient(env.uri)
    session = requests.Session()
    try:
        for _ in range(runs):
            start = time.perf_counter()
            seen, page = 0, 1
            while True:
                body = session.get(f"{url}/machines", params={"max_results": page_size, "page": page},
                                   timeout=120).json()
                seen += len(body["_items"])
                if "next" not in body["_links"]:
                    break
                page += 1
            api.append(time.perf_counter() - start)
            assert seen == count, seen
            start = time.perf_counter()
            docs = list(client[db.name].machines.find({}))
            raw.append(time.perf_counter() - start)
            assert len(docs) == count
    finally:
        client.close()
        session.close()
    return {"name": f"list {count:,} machines, all pages ({page_size}/page)", "unit": "s", "ours": api,
            "baseline": raw, "baseline_name": "pymongo list(find({}))", "higher_is_better": False,
            "errors": 0, "notes": f"{count // page_size} pages"}


def _peak_rss(pid):
    """The process's peak resident memory so far (VmHWM), in bytes."""
    with open(f"/proc/{pid}/status", encoding="utf-8") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def list_unpaged(env, runs, count=10_000):
    """Seconds to list `count` machines with one bare GET (streamed), against the driver; worker memory growth."""
    db = env.database("bench_list_unpaged")
    seed_machines(db, count)
    api = env.api(db.name)
    url = api.url
    ours, raw = [], []
    client = pymongo.MongoClient(env.uri)
    session = requests.Session()
    try:
        for _ in range(30):  # every worker has served a small listing before its peak memory is read
            session.get(f"{url}/machines", params={"max_results": 10}, timeout=30).raise_for_status()
        before = {pid: _peak_rss(pid) for pid in api.worker_pids()}
        size = 0
        for _ in range(runs):
            start = time.perf_counter()
            response = session.get(f"{url}/machines", timeout=120)
            items = response.json()["_items"]
            ours.append(time.perf_counter() - start)
            assert len(items) == count, len(items)
            size = len(response.content)
            start = time.perf_counter()
            docs = list(client[db.name].machines.find({}))
            raw.append(time.perf_counter() - start)
            assert len(docs) == count
        after = {pid: _peak_rss(pid) for pid in before}
        growth = max(after[pid] - peak for pid, peak in before.items())
    finally:
        client.close()
        session.close()
    return {"name": f"list {count:,} machines, one bare GET (streamed)", "unit": "s", "ours": ours,
            "baseline": raw, "baseline_name": "pymongo list(find({}))", "higher_is_better": False,
            "errors": 0, "notes": f"one answer of {size / 1e6:.1f} MB; workers' peak RSS "
                                  f"{max(after.values()) / 1e6:.0f} MB, grown by {max(growth, 0) // 1024:,} kB "
                                  "at most while listing"}
