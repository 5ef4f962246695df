"""The interactive targets (issues 10 and 22) at a fleet size, as deployed (gunicorn), beside the raw driver.

For each fleet size: the fleet is stored straight into a fresh database and recounted (as
`rm-sweep` does after an import around the API), the API (gunicorn, `resource_manager/gunicorn_conf.py`
defaults) is started on it, and every operation is timed as a client sees it, interleaved with its
floor: the raw driver (pymongo) doing the least the operation needs, on the same database in the
same run. Medians of several samples; one client unless said otherwise. Bounded: a fixed number of
samples (at most FLOOR_SAMPLES of a floor that reads the whole fleet), and a time limit for the 32
clients. The address rows (scale_pools.py) use a /16 pool with 50,000 addresses taken, in the same
database.
"""

import csv
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid

import pymongo
import requests
from pymongo.errors import DuplicateKeyError

from resource_manager.core.store import RESERVATIONS

from . import scale_pools
from .cli import rmctl
from .reads import TAGS, seed_machines

OPERATOR = ("operator", "bench-operator-pw")
HTML = {"Accept": "text/html"}
# (name, unit, target, whether higher is better)
OPERATIONS = [
    ("get", "GET /machines/<hostname>", "ms", 15, False),
    ("patch", "PATCH /machines/<hostname>", "ms", 40, False),
    ("reserve", "reserve 1 + release, 1 client", "ms", 150, False),
    ("reserve32", "reservations/s, 32 clients", "res/s", 20, True),
    ("dashboard", "dashboard page (/, HTML), cached", "ms", 300, False),
    ("dashboard_first", "dashboard page (/, HTML), first load", "ms", 1000, False),
    ("metrics", "GET /metrics, figures read afresh", "ms", None, False),
    ("import", "rmctl import of the fleet", "s", None, False),
    ("list", "rmctl list --limit 20", "ms", 400, False),
    ("alloc", "allocate 1 address, /16 with 50,000 taken", "ms", 20, False),
    ("pool", "GET /address-pools/<name>, 50,000 taken", "ms", 100, False),
]
IMPORT_TARGET = {10_000: 30, 100_000: 60}  # seconds, for that many machines
FLOOR_SAMPLES = 3  # a floor that reads the whole fleet takes seconds to a minute at 250,000


def _ms(start):
    return (time.perf_counter() - start) * 1000


def _median_pair(samples, ours, floor, floor_samples=None):
    """Run ours() `samples` times and floor() `floor_samples` times (default as many), interleaved; return medians."""
    a, b = [], []
    for i in range(samples):
        start = time.perf_counter()
        ours(i)
        a.append(_ms(start))
        if i < (samples if floor_samples is None else floor_samples):
            start = time.perf_counter()
            floor(i)
            b.append(_ms(start))
    return statistics.median(a), statistics.median(b) if b else None


def _get(url, session, coll, hostnames, samples):
    def ours(i):
        response = session.get(f"{url}/machines/{hostnames[i * 7919 % len(hostnames)]}", timeout=60)
        assert response.status_code == 200, response.text

    def floor(i):
        assert coll.find_one({"hostname": hostnames[i * 7919 % len(hostnames)]}) is not None

    return _median_pair(samples, ours, floor)


def _patch(url, session, coll, hostnames, samples):
    def ours(i):
        name = hostnames[(i * 104729 + 1) % len(hostnames)]
        etag = session.get(f"{url}/machines/{name}", timeout=60).json()["_etag"]  # not timed: a client has it
        start = time.perf_counter()
        response = session.patch(f"{url}/machines/{name}", json={"owner": f"bench{i}"}, headers={"If-Match": etag},
                                 timeout=60)
        assert response.status_code == 200, response.text
        return _ms(start)

    def floor(i):
        name = hostnames[(i * 104729 + 2) % len(hostnames)]
        start = time.perf_counter()
        assert coll.update_one({"hostname": name}, {"$set": {"owner": f"raw{i}"}}).matched_count == 1
        return _ms(start)

    pairs = [(ours(i), floor(i)) for i in range(samples)]
    return statistics.median(p[0] for p in pairs), statistics.median(p[1] for p in pairs)


def _raw_reserve(db, job):
    # The least a correct reservation needs: an idle machine, a claim insert that decides, the
    # machine marked in_use; and back: idle, claim deleted. The cursor is closed here, and its
    # close paid here: on FerretDB it reads the rest of the SQL result, which, left to pymongo's
    # background thread, ran on into the next benchmark (ten such reads at once at 250,000).
    with db.machines.find({"state": "idle"}, {"_id": 1}, batch_size=16) as cursor:
        for machine in cursor:
            try:
                db.bench_claims.insert_one({"_id": machine["_id"], "holder": job})
            except DuplicateKeyError:
                continue
            db.machines.update_one({"_id": machine["_id"]}, {"$set": {"state": "in_use", "job_id": job}})
            return machine["_id"]
    raise RuntimeError("no idle machine")


def _raw_release(db, machine_id, job):
    db.machines.update_one({"_id": machine_id}, {"$set": {"state": "idle", "job_id": None}})
    db.bench_claims.delete_one({"_id": machine_id, "holder": job})


def _reserve(url, session, db, samples):
    def ours(i):
        response = session.post(f"{url}/reservations", json={"count": 1, "job_id": f"bench-{i}"}, timeout=60)
        assert response.status_code == 201, response.text
        released = session.delete(f"{url}/reservations/{response.json()['_id']}", timeout=60)
        assert released.status_code == 200, released.text

    def floor(i):
        job = f"raw-{i}"
        _raw_release(db, _raw_reserve(db, job), job)

    return _median_pair(samples, ours, floor)


def _rate(clients, seconds, step):
    """Operations per second of step(client) run by `clients` threads together for `seconds`."""
    done, errors, lock = [0], [0], threading.Lock()
    gate = threading.Barrier(clients + 1)
    deadline = [0.0]

    def worker(n):
        gate.wait(timeout=60)
        while time.monotonic() < deadline[0]:
            try:
                step(n)
                with lock:
                    done[0] += 1
            except Exception:  # noqa: BLE001 - counted and reported
                with lock:
                    errors[0] += 1

    threads = [threading.Thread(target=worker, args=(n,), daemon=True) for n in range(clients)]
    for thread in threads:
        thread.start()
    deadline[0] = time.monotonic() + seconds
    gate.wait(timeout=60)
    start = time.perf_counter()
    for thread in threads:
        thread.join(timeout=seconds + 120)
    return done[0] / (time.perf_counter() - start), errors[0]


def _reserve32(url, db, uri, seconds=8.0, clients=32):
    sessions = [requests.Session() for _ in range(clients)]
    for s in sessions:
        s.auth = OPERATOR
    run = uuid.uuid4().hex[:6]

    def ours(n):
        response = sessions[n].post(f"{url}/reservations", json={"count": 1, "job_id": f"b32-{run}"}, timeout=120)
        if response.status_code != 201:
            raise RuntimeError(response.status_code)

    rate, errors = _rate(clients, seconds, ours)
    sessions[0].delete(f"{url}/reservations", params={"job_id": f"b32-{run}"}, timeout=600)
    client = pymongo.MongoClient(uri)
    raw_db = client[db.name]
    held = []

    def floor(n):
        held.append((_raw_reserve(raw_db, f"r32-{run}"), f"r32-{run}"))

    raw_rate, raw_errors = _rate(clients, seconds, floor)
    for machine_id, job in held:
        _raw_release(raw_db, machine_id, job)
    client.close()
    for s in sessions:
        s.close()
    return rate, raw_rate, errors + raw_errors


def _dashboard_floor(coll):
    def floor(i):  # what one uncached page needs: counts by state, and the first page sorted by hostname
        list(coll.aggregate([{"$group": {"_id": "$state", "n": {"$sum": 1}}}]))
        list(coll.find({}, {"hostname": 1, "state": 1, "owner": 1, "job_id": 1, "tags": 1, "_updated": 1})
             .sort("hostname", 1).limit(50))

    return floor


def _dashboard(url, coll, samples, first_url):
    """Cached pages, then first loads: pages of an API that keeps nothing (DASHBOARD_CACHE_SECONDS=0)."""
    start = time.perf_counter()
    assert requests.get(url + "/", headers=HTML, timeout=300).status_code == 200
    cold = _ms(start)

    def ours(i):
        assert requests.get(url + "/", headers=HTML, timeout=120).status_code == 200

    def first(i):
        assert requests.get(first_url + "/", headers=HTML, timeout=300).status_code == 200

    floor = _dashboard_floor(coll)
    cached, floor_ms = _median_pair(samples, ours, floor, FLOOR_SAMPLES)
    first_ms, _ = _median_pair(samples, first, lambda i: None, 0)
    return cached, first_ms, floor_ms, cold


def _list(url, coll, samples):
    env = dict(os.environ, RM_ENDPOINT=url, NO_PROXY="127.0.0.1,localhost")
    startup = []

    def ours(i):
        subprocess.run(rmctl() + ["list", "--limit", "20", "--format", "json"], env=env, check=True,
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, timeout=300)

    def floor(i):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import requests"], check=True, timeout=60)
        startup.append(_ms(start))
        list(coll.find({}).limit(20))
        coll.count_documents({})

    ours_ms, floor_ms = _median_pair(samples, ours, floor, FLOOR_SAMPLES)
    return ours_ms, floor_ms, statistics.median(startup)


def _raw_figures(db):
    """What a scrape's figures need with nothing kept: machines and reservations by state, the claims."""
    group = [{"$group": {"_id": "$state", "n": {"$sum": 1}}}]
    list(db.machines.aggregate(group))
    list(db[RESERVATIONS].aggregate(group))
    list(db.address_pools.find({}))
    list(db.address_claims.find({}, {"kind": 1, "ipkey": 1, "_id": 0}))


def _metrics(url, db, samples):
    """GET /metrics with its database figures read each time (the API runs with METRICS_CACHE_SECONDS=0)."""
    healthz = []

    def ours(i):
        assert requests.get(url + "/metrics", timeout=120).status_code == 200

    def floor(i):  # the reads a scrape needs, by the raw driver; and /healthz, an answer that reads nothing
        _raw_figures(db)
        start = time.perf_counter()
        assert requests.get(url + "/healthz", timeout=60).status_code == 200
        healthz.append(_ms(start))

    ours_ms, floor_ms = _median_pair(samples, ours, floor, FLOOR_SAMPLES)
    return ours_ms, floor_ms - statistics.median(healthz), statistics.median(healthz)


def _import(env, size, workdir):
    path = os.path.join(workdir, f"import-{size}.csv")
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["hostname", "state", "tags.memory", "tags.cpucores", "tags.rack"])
        for i in range(size):
            writer.writerow([f"i{i:06d}.lab.example.com", "idle", TAGS["memory"], TAGS["cpucores"], f"r{i % 40}"])
    db = env.database(f"bench_import_{size}")
    url = env.api(db.name).url
    child = dict(os.environ, RM_ENDPOINT=url, RM_USERNAME=OPERATOR[0], RM_PASSWORD=OPERATOR[1],
                 NO_PROXY="127.0.0.1,localhost")
    start = time.perf_counter()
    subprocess.run(rmctl() + ["import", path], env=child, check=True, stdin=subprocess.DEVNULL,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=3600)
    ours = time.perf_counter() - start
    assert env.client[db.name].machines.count_documents({}) == size
    env.stop_api(db.name)
    raw_db = env.database(f"bench_rawimport_{size}")
    raw_db.machines.create_index("hostname", unique=True)
    start = time.perf_counter()
    seed_machines(raw_db, size, prefix="r", recount=False)
    floor = time.perf_counter() - start
    env.client.drop_database(raw_db.name)
    return ours, floor


def measure(env, size, samples=25, workdir="/tmp"):
    """Return {operation key: (ours, floor, notes)} for a fleet of `size` machines."""
    print(f"  fleet of {size:,}: seeding ...", file=sys.stderr, flush=True)
    db = env.database(f"bench_scale_{size}")
    start = time.perf_counter()
    hostnames = seed_machines(db, size)  # and recounts, as rm-sweep does after an import around the API
    seeded = time.perf_counter() - start
    scale_pools.seed(db)
    env.settle()
    url = env.api(db.name, {"RM_METRICS_CACHE_SECONDS": "0"}).url  # /metrics reads afresh: its worst case
    first_url = env.api(db.name, {"RM_DASHBOARD_CACHE_SECONDS": "0"}, name="first").url
    session = requests.Session()
    session.auth = OPERATOR
    coll = db.machines
    found = {}
    try:
        for key, run in (
            ("get", lambda: _get(url, session, coll, hostnames, samples)),
            ("patch", lambda: _patch(url, session, coll, hostnames, samples)),
            ("reserve", lambda: _reserve(url, session, db, max(5, samples // 2))),
        ):
            print(f"  fleet of {size:,}: {key} ...", file=sys.stderr, flush=True)
            ours, floor = run()
            found[key] = (ours, floor, "")
        print(f"  fleet of {size:,}: 32 clients ...", file=sys.stderr, flush=True)
        ours, floor, errors = _reserve32(url, db, env.uri)
        found["reserve32"] = (ours, floor, f"{errors} errors" if errors else "")
        print(f"  fleet of {size:,}: dashboard ...", file=sys.stderr, flush=True)
        cached, first, floor, cold = _dashboard(url, coll, max(5, samples // 2), first_url)
        found["dashboard"] = (cached, floor, f"raw: counts by state + the first 50 sorted by hostname, "
                                             f"{FLOOR_SAMPLES} samples")
        found["dashboard_first"] = (first, floor, f"pages of an API keeping nothing (DASHBOARD_CACHE_SECONDS=0); "
                                                  f"the very first page after the start {cold:,.0f} ms")
        print(f"  fleet of {size:,}: /metrics ...", file=sys.stderr, flush=True)
        ours, floor, healthz = _metrics(url, db, max(5, samples // 4))
        found["metrics"] = (ours, floor, f"kept counts; raw: $group by state on machines and reservations, the "
                                         f"pools, every claim; GET /healthz {healthz:,.0f} ms")
        print(f"  fleet of {size:,}: rmctl list ...", file=sys.stderr, flush=True)
        ours, floor, startup = _list(url, coll, max(5, samples // 4))
        found["list"] = (ours, floor, f"raw: python start {startup:,.0f} ms + find().limit(20) + count_documents")
        print(f"  fleet of {size:,}: address pool ...", file=sys.stderr, flush=True)
        found.update(scale_pools.measure(url, db, max(5, samples // 2), FLOOR_SAMPLES))
    finally:
        session.close()
        env.stop_api(db.name, name="first")
        env.stop_api(db.name)
    print(f"  fleet of {size:,}: rmctl import ...", file=sys.stderr, flush=True)
    ours, floor = _import(env, size, workdir)
    found["import"] = (ours, floor, f"{ours / size * 1000:.2f} s per 1,000; raw: insert_many, 1,000 a call, "
                                    f"unique index on hostname; seeding raw + recount took {seeded:,.0f} s")
    return found


def fmt(value, unit):
    if unit == "s":
        return f"{value:,.1f} s"
    return f"{value:,.0f} {unit}" if value >= 100 else f"{value:,.3g} {unit}"


def report(results):
    """Markdown: one table per size with targets, then the scale table."""
    out = []
    for size, found in results.items():
        out.append(f"**{size:,} machines**\n")
        out.append("| operation | target | ours (median) | raw driver, same database (median) | ours ÷ raw | notes |")
        out.append("| --- | --- | --- | --- | --- | --- |")
        for key, name, unit, target, higher in OPERATIONS:
            if key not in found:
                continue
            ours, floor, notes = found[key]
            if key == "import":
                target = IMPORT_TARGET.get(size)
            goal = "–" if target is None else (f"≥ {target} {unit}" if higher else f"≤ {target} {unit}")
            met = "" if target is None else (" ✓" if (ours >= target if higher else ours <= target) else " ✗")
            ratio = floor / ours if higher else ours / floor
            out.append(f"| {name} | {goal} | {fmt(ours, unit)}{met} | {fmt(floor, unit)} | {ratio:.2f}x | {notes} |")
        out.append("")
    if len(results) > 1:
        sizes = list(results)
        out.append("**Scale: ours (raw driver floor) at each fleet size, ✓ or ✗ against the target**\n")
        out.append("| operation | target | " + " | ".join(f"{s:,} machines" for s in sizes) + " |")
        out.append("| --- | --- |" + " --- |" * len(sizes))
        for key, name, unit, target, higher in OPERATIONS:
            cells = []
            for s in sizes:
                if key not in results[s]:
                    cells.append("–")
                    continue
                ours, floor, _notes = results[s][key]
                goal = IMPORT_TARGET.get(s) if key == "import" else target
                met = "" if goal is None else (" ✓" if (ours >= goal if higher else ours <= goal) else " ✗")
                cells.append(f"{fmt(ours, unit)}{met} ({fmt(floor, unit)})")
            goal = ", ".join(f"≤ {t} s at {n:,}" for n, t in IMPORT_TARGET.items()) if key == "import" else (
                "–" if target is None else f"{'≥' if higher else '≤'} {target} {unit}")
            out.append(f"| {name} | {goal} | " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)
