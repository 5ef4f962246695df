"""Benchmarks of issue 24: the Ansible inventory at 10,000 machines, event latency, webhooks and the API,
the cost of numbering events. Each against a baseline measured in the same run.
"""

import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import requests

from tests.sse import Stream
from tests.support import seed_machines

# The accounts of bench/__main__.py's users file (BENCH_USERS).
BENCH_USERS_AUTH = {"admin": ("admin", "bench-admin-pw"), "operator": ("operator", "bench-operator-pw")}

BIN = os.path.dirname(sys.executable)
HOOKS_ENV = {"RM_WEBHOOK_ALLOW": "127.0.0.1", "RM_WEBHOOK_TIMEOUT": "30"}


def _ansible(env, argv):
    start = time.perf_counter()
    done = subprocess.run([os.path.join(BIN, argv[0]), *argv[1:]], env=env, capture_output=True, text=True,
                          timeout=600)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    return time.perf_counter() - start


def ansible_inventory(env, runs, count=10_000):
    """Seconds of `ansible-inventory --list` over `count` machines (one request), against the same from the cache."""
    db = env.database("bench_ansible")
    seed_machines(db, count)
    url = env.api(db.name).url
    with tempfile.TemporaryDirectory(prefix="rm-bench-ansible-") as work:
        plain = os.path.join(work, "lab.rm.yml")
        with open(plain, "w", encoding="utf-8") as fh:
            fh.write("plugin: resource_manager.lab.inventory\n")
        cached = os.path.join(work, "cached.rm.yml")
        with open(cached, "w", encoding="utf-8") as fh:
            fh.write(f"plugin: resource_manager.lab.inventory\ncache: true\ncache_plugin: ansible.builtin.jsonfile\n"
                     f"cache_connection: {work}/cache\ncache_timeout: 3600\n")
        ansible_env = dict(os.environ, RM_ENDPOINT=url, ANSIBLE_HOME=os.path.join(work, "home"), NO_PROXY="127.0.0.1")
        _ansible(ansible_env, ["ansible-inventory", "-i", cached, "--list"])  # fills the cache
        ours, baseline = [], []
        for _ in range(runs):
            ours.append(_ansible(ansible_env, ["ansible-inventory", "-i", plain, "--list"]))
            baseline.append(_ansible(ansible_env, ["ansible-inventory", "-i", cached, "--list"]))
    env.stop_api(db.name)
    return {"name": f"ansible-inventory --list, {count:,} machines", "unit": "s", "ours": ours,
            "baseline": baseline, "baseline_name": "the same inventory from Ansible's cache, no request",
            "higher_is_better": False, "notes": "one GET /machines per run (asserted by tests/test_ansible.py); "
                                                "the difference is our request and parsing"}


def event_latency(env, runs, samples=20):
    """Seconds from a PATCH's answer to its event on a stream, against the PATCH itself."""
    db = env.database("bench_events")
    seed_machines(db, 100)
    url = env.api(db.name).url
    session = requests.Session()
    session.auth = BENCH_USERS_AUTH["operator"]
    ours, baseline = [], []
    for _ in range(runs):
        delays, patches = [], []
        with Stream(url) as stream:
            for i in range(samples):
                host = f"m{i:05d}.lab.example.com"
                etag = session.get(f"{url}/machines/{host}", timeout=30).json()["_etag"]
                start = time.perf_counter()
                answer = session.patch(f"{url}/machines/{host}", json={"owner": f"o{time.time_ns()}"},
                                       headers={"If-Match": etag}, timeout=30)
                answered = time.perf_counter()
                assert answer.status_code == 200, answer.text
                seen = len(stream.events)
                stream.wait_for(seen + 1, timeout=30)
                delays.append(time.perf_counter() - answered)
                patches.append(answered - start)
        ours.append(statistics.median(delays))
        baseline.append(statistics.median(patches))
    env.stop_api(db.name)
    return {"name": "event on a stream after a PATCH's answer", "unit": "s", "ours": ours, "baseline": baseline,
            "baseline_name": "the PATCH itself", "higher_is_better": False,
            "notes": f"median of {samples} PATCHes per run; the stream may be served by another worker "
                     "(events come from the database: each process polls it every 0.1 s)"}


def hung_receiver(env, runs, samples=40):
    """PATCH latency while webhooks wait on a receiver that never answers, against no webhook at all."""
    from pytest_httpserver import HTTPServer
    from werkzeug import Response

    hang = threading.Event()
    receiver = HTTPServer(host="127.0.0.1", port=0, threaded=True)
    receiver.expect_request("/hook").respond_with_handler(lambda _r: (hang.wait(60), Response("late"))[1])
    receiver.start()
    ours, baseline, hung = [], [], 0
    try:
        for label, results in (("hooked", ours), ("plain", baseline)):
            db = env.database(f"bench_hooks_{label}")
            seed_machines(db, 100)
            url = env.api(db.name, HOOKS_ENV).url
            session = requests.Session()
            session.auth = BENCH_USERS_AUTH["admin"]
            if label == "hooked":
                for _ in range(4):  # every delivery thread of every worker: each waits on the receiver
                    session.post(f"{url}/webhooks", json={"url": receiver.url_for("/hook"), "events": ["*"]},
                                 timeout=30).raise_for_status()
            for _ in range(runs):
                times = []
                for i in range(samples):
                    host = f"m{i % 100:05d}.lab.example.com"
                    etag = session.get(f"{url}/machines/{host}", timeout=30).json()["_etag"]
                    start = time.perf_counter()
                    session.patch(f"{url}/machines/{host}", json={"owner": f"o{i}"}, headers={"If-Match": etag},
                                  timeout=30).raise_for_status()
                    times.append(time.perf_counter() - start)
                results.append(statistics.median(times))
            if label == "hooked":
                hung = db.webhook_deliveries.count_documents({"state": "delivering"})
            env.stop_api(db.name)
    finally:
        hang.set()
        receiver.stop()
    return {"name": "PATCH while every webhook delivery thread waits on a receiver that never answers", "unit": "s",
            "ours": ours, "baseline": baseline, "baseline_name": "PATCH with no webhook", "higher_is_better": False,
            "notes": f"{samples} PATCHes per run; deliveries hanging at the end: {hung}"}


def event_numbering(env, runs, entries=200):
    """Seconds to store a history entry with its numbered event, against inserting the entry alone."""
    import pymongo

    from resource_manager.core import atomic, history

    db_name = "bench_numbering"
    env.database(db_name)
    client = pymongo.MongoClient(env.uri, tz_aware=True)
    db = atomic.detect(client[db_name]).wrap(client[db_name])
    doc = {"_id": "x", "hostname": "h"}
    ours, baseline = [], []
    try:
        for _ in range(runs):
            start = time.perf_counter()
            for j in range(entries):
                history.record(db, "machines", doc, "update", {"n": {"before": j, "after": j + 1}})
            ours.append((time.perf_counter() - start) / entries)
            start = time.perf_counter()
            for j in range(entries):
                db[history.COLLECTION].insert_one(history.entry("machines", doc, "update", {"n": {"before": j}}))
            baseline.append((time.perf_counter() - start) / entries)
    finally:
        client.drop_database(db_name)
        client.close()
    return {"name": "a history entry with its event (one writer)", "unit": "s", "ours": ours, "baseline": baseline,
            "baseline_name": "the history insert alone", "higher_is_better": False,
            "notes": "read the top mark, insert the event, raise the mark ($max), insert the entry"}

