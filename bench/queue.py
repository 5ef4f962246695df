"""The reservation queue (issue 14): how soon a waiting client gets a released machine, and throughput.

Two gunicorn processes (tests/cluster.py: one worker of 8 threads each) share one database; the
waiting clients are the library's `reserve(wait=...)`, each on its own keep-alive session, and
alternate between the two processes, so a release on one process is granted to a client
long-polling the other (the release comes half a second after the waiter queued, once it sits in
its long poll). Baselines are measured in the same run, on the same servers:

- grant latency: from the start of the release (DELETE) to the moment the waiting client holds
  its reservation; baseline, the same release followed at once by a reserve that does not wait
  (what a client polling with no delay at all could reach: release and reserve round trips);
- throughput with a saturated queue: `clients` threads each reserving 1 machine with a wait,
  then releasing it, over `machines` machines (so `clients - machines` always wait); baseline,
  the same threads and cycle with a machine for every client (nobody waits).
"""

import threading
import time

from resource_manager.clientlib.client import ResourceManagerClient
from tests.cluster import Cluster

from .reads import seed_machines

OPERATOR = ("operator", "bench-operator-pw")
SETTLE = 0.5  # s between the waiter being queued and the release
WARM_UP = 2.0  # s of unmeasured cycles on fresh servers (their first requests are slow)
WARM_SAMPLES = 2  # unmeasured latency samples, likewise


def _client(url):
    # No retries: a failure should show in the figures, not be ridden out.
    return ResourceManagerClient("machines", url, *OPERATOR, timeout=90, max_retries=0)


def _cluster(env, name):
    db = env.database(name)
    return Cluster(env.uri, db.name, env.users_file, env.workdir, n=2), db


def percentile(values, fraction):
    """Return the value below which `fraction` of `values` lie (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered) + 0.5) - 1))]


def queue_grant_latency(env, runs, samples=30):
    """Milliseconds from a release to the grant of a client waiting on the other process."""
    ours, base, checked = [], [], 0
    for run in range(runs):
        cluster, db = _cluster(env, f"bench_queue_latency_{run}")
        try:
            seed_machines(db, 1, prefix="q")
            clients = [_client(url) for url in cluster.urls]
            held = clients[0].reserve(1, job_id="holder")
            for i in range(samples + WARM_SAMPLES):
                holder, waiter = clients[i % 2], clients[(i + 1) % 2]
                queued, got = threading.Event(), {}

                def wait(waiter=waiter, queued=queued, got=got, i=i):
                    got["res"] = waiter.reserve(1, job_id=f"waiter-{i}", wait=120, on_progress=lambda _r: queued.set())
                    got["at"] = time.perf_counter()

                thread = threading.Thread(target=wait, daemon=True)
                thread.start()
                if not queued.wait(60):
                    raise RuntimeError("the waiting client was never queued")
                # A release comes while the waiter sits in its long poll, as it does most of its wait.
                time.sleep(SETTLE)
                started = time.perf_counter()
                holder.release(held["_id"])
                thread.join(150)
                if "res" not in got:
                    raise RuntimeError("the waiting client was not granted")
                if i >= WARM_SAMPLES:
                    ours.append((got["at"] - started) * 1000)
                held = got["res"]
                checked += i >= WARM_SAMPLES and held["hostnames"] == ["q00000.lab.example.com"]
                # Baseline: the same release, then a reserve that does not wait, on the other process.
                started = time.perf_counter()
                waiter.release(held["_id"])
                held = holder.reserve(1, job_id=f"poller-{i}")
                if i >= WARM_SAMPLES:
                    base.append((time.perf_counter() - started) * 1000)
            for client in clients:
                client.close()
        finally:
            cluster.stop()
            env.client.drop_database(db.name)
    n = len(ours)
    notes = (f"2 gunicorn processes; the waiter long-polls the other process than the releaser; {n} grants, "
             f"all of the released machine: {checked == n}")
    return [
        {"name": "release → grant of a waiting client, median", "unit": "ms", "ours": ours, "baseline": base,
         "baseline_name": "release, then reserve without waiting", "higher_is_better": False, "errors": 0,
         "notes": notes, "queue": True},
        {"name": "release → grant of a waiting client, p99", "unit": "ms", "ours": [percentile(ours, 0.99)],
         "baseline": [percentile(base, 0.99)], "baseline_name": "release, then reserve without waiting",
         "higher_is_better": False, "errors": 0,
         "notes": f"p99 of {n} samples (nearest rank: with fewer than 100, the slowest or next to it)", "queue": True},
    ]


def _cycles(urls, clients, seconds, wait, where):
    """Run `clients` threads reserving 1 machine then releasing it; return (grants, elapsed, violations)."""
    holders, lock, stop = {}, threading.Lock(), time.monotonic() + seconds
    counts, violations, errors = [0] * clients, [], []
    gate = threading.Barrier(clients + 1)

    def worker(n):
        rm = _client(urls[n % len(urls)])
        try:
            gate.wait(60)
            while time.monotonic() < stop:
                res = rm.reserve(1, job_id=f"bench-{n}", where=where, wait=wait)
                with lock:  # held from the grant until just before the release is sent
                    for hostname in res["hostnames"]:
                        if hostname in holders:
                            violations.append((hostname, holders[hostname], n))
                        holders[hostname] = n
                    counts[n] += time.monotonic() < stop
                with lock:
                    for hostname in res["hostnames"]:
                        holders.pop(hostname, None)
                rm.release(res["_id"])
        except Exception as e:  # noqa: BLE001  (counted and reported, not hidden)
            errors.append(repr(e))
        finally:
            rm.close()

    threads = [threading.Thread(target=worker, args=(n,), daemon=True) for n in range(clients)]
    for thread in threads:
        thread.start()
    gate.wait(60)
    started = time.monotonic()
    for thread in threads:
        thread.join(seconds + 180)
    return sum(counts), min(time.monotonic(), stop) - started, violations, errors


def queue_saturated(env, runs, clients=12, machines=4, seconds=10.0):
    """Reservations granted per second with a saturated queue, against the same cycle with no queue."""
    ours, base, violations, errors = [], [], 0, []
    for run in range(runs):
        cluster, db = _cluster(env, f"bench_queue_saturated_{run}")
        try:
            queued = seed_machines(db, machines, prefix="q")
            db.machines.update_many({"hostname": {"$in": queued}}, {"$set": {"tags.group": "queue"}})
            free = seed_machines(db, clients, prefix="f")
            db.machines.update_many({"hostname": {"$in": free}}, {"$set": {"tags.group": "free"}})
            _cycles(cluster.urls, clients, WARM_UP, None, {"tags.group": "free"})  # fresh workers: not measured
            granted, elapsed, bad, failed = _cycles(cluster.urls, clients, seconds, 120, {"tags.group": "queue"})
            ours.append(granted / elapsed)
            violations += len(bad)
            errors += failed
            granted, elapsed, bad, failed = _cycles(cluster.urls, clients, seconds, None, {"tags.group": "free"})
            base.append(granted / elapsed)
            violations += len(bad)
            errors += failed
        finally:
            cluster.stop()
            env.client.drop_database(db.name)
    notes = (f"{clients} clients on 2 gunicorn processes, {machines} machines ({clients - machines} always waiting); "
             f"baseline: the same clients with a machine each; {violations} machines held twice"
             + (f"; errors: {errors[:3]}" if errors else ""))
    return {"name": f"reserve (wait) + release, saturated queue, {clients} clients", "unit": "res/s", "ours": ours,
            "baseline": base, "baseline_name": "the same cycle, nobody waits", "higher_is_better": True,
            "errors": len(errors), "notes": notes, "queue": True}
