"""What atomic writes cost: PATCH/s through the API, serialised by the host lock, against the same API with
serialisation switched off (WRITE_SERIALISATION=off: the unsafe behaviour before), in the same run."""

import os
import random
import time

import requests

from .load import throughput
from .reads import seed_machines
from .reservations import OPERATOR

MACHINES = 200
SECONDS = 5


def api_patch_machine(url, auth, ids):
    """Client set-up: PATCH a random machine's tags by _id, with its current If-Match (retried on 412)."""
    session = requests.Session()
    session.auth = auth
    rng = random.Random()

    def once():
        path = f"{url}/machines/{rng.choice(ids)}"
        for _attempt in range(10):
            doc = session.get(path, timeout=30).json()
            response = session.patch(path, json={"tags": {"n": rng.randrange(1 << 30)}},
                                     headers={"If-Match": doc["_etag"]}, timeout=30)
            if response.status_code == 200:
                return
            if response.status_code != 412:
                raise RuntimeError(response.status_code)
        raise RuntimeError("412 ten times")

    return once


def _patch_rates(env, runs, clients, modes, prefix):
    """{mode: [PATCH/s of each run]} with RM_WRITE_SERIALISATION=mode, a fresh database per mode."""
    rates = {}
    for mode in modes:
        dbname = f"{prefix}_{mode}"
        db = env.database(dbname)
        seed_machines(db, MACHINES)
        ids = [str(d["_id"]) for d in db.machines.find({}, {"_id": 1})]
        url = env.api(dbname, {"RM_WRITE_SERIALISATION": mode}).url
        rates[mode] = [throughput(api_patch_machine, (url, OPERATOR, ids), clients, SECONDS)[0]
                       for _ in range(runs)]
        env.stop_api(dbname)
    return rates


def patch_rate(env, runs, clients):
    """PATCH/s at `clients` clients, serialised (ours) and not (baseline)."""
    rates = _patch_rates(env, runs, clients, ("auto", "off"), "bench_writes")
    return {"name": f"PATCH a machine (GET + PATCH If-Match), {clients} clients", "ours": rates["auto"],
            "baseline": rates["off"], "baseline_name": "same API, writes not serialised (unsafe)",
            "unit": "PATCH/s", "higher_is_better": True,
            "notes": f"{MACHINES} machines, by _id; the cost of the write lock on the embedded database"}


def patch_1(env, runs):
    return patch_rate(env, runs, 1)


def patch_8(env, runs):
    return patch_rate(env, runs, 8)


def patch_32(env, runs):
    return patch_rate(env, runs, 32)


def lock_cost(env, runs, rounds=2000):
    """Taking and letting go of the write lock: the PostgreSQL advisory lock against the host flock, in process."""
    import functools
    import tempfile

    from resource_manager.core import locks, storage

    key = int.from_bytes(os.urandom(8), "big", signed=True)
    advisory = locks.AdvisoryLock(functools.partial(storage.connect_postgres, env.localdb.postgres_url), key, "bench")
    with tempfile.NamedTemporaryFile(prefix="rm-bench-lock-") as fh:
        flock = locks.HostLock(fh.name)
        costs = {"advisory": [], "flock": []}
        for _ in range(runs):
            for name, lock in (("advisory", advisory), ("flock", flock)):
                with lock:  # the session or file opened outside the timing
                    pass
                start = time.perf_counter()
                for _ in range(rounds):
                    with lock:
                        pass
                costs[name].append((time.perf_counter() - start) / rounds * 1000)
        flock.close()
    advisory.close()
    return {"name": "take and let go of the write lock (uncontended, one thread)", "ours": costs["advisory"],
            "baseline": costs["flock"], "baseline_name": "host flock", "unit": "ms", "higher_is_better": False,
            "notes": f"{rounds} lock+unlock per run; PostgreSQL advisory lock over the embedded PostgreSQL's Unix "
                     "socket (a TCP hop to another host adds its round trip)"}


def patch_vs_flock(env, runs, clients=8):
    """PATCH/s at `clients` clients: the advisory lock (every host) against the flock (this host only)."""
    rates = _patch_rates(env, runs, clients, ("auto", "host"), "bench_lock")
    return {"name": f"PATCH a machine (GET + PATCH If-Match), {clients} clients, lock every host sees",
            "ours": rates["auto"], "baseline": rates["host"],
            "baseline_name": "same API, host flock (one host only)", "unit": "PATCH/s", "higher_is_better": True,
            "notes": f"{MACHINES} machines, by _id; PostgreSQL advisory lock against the flock it replaces"}
