#!/usr/bin/env python3
"""Time dashboard pages at 10,000 machines against a 100-machine baseline measured in the same run.

Usage: .venv/bin/python bench/bench_dashboard.py [--machines 10000] [--repeat 5]
Prints median milliseconds per page and the ratio to the baseline; asserts nothing.
"""

import argparse
import datetime
import os
import statistics
import sys
import tempfile
import time

import pymongo
import requests

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from resource_manager.localdb import LocalDB  # noqa: E402
from tests.support import LiveServer  # noqa: E402

PAGES = {
    "first page": "/",
    "last page": "/?page={last}",
    "state filter": "/?state=idle",
    "tag filter": "/?tag=rack=r07",
    "hostname search": "/?q=n00042",
    "sort by owner": "/?sort=-owner&page=3",
    "machine page": "/ui/machines/n00042.lab",
}
STATES = ("idle", "in_use", "pxe", "pxe_failed", "needs_repair")


def seed(db, count):
    now = datetime.datetime.now(datetime.timezone.utc)
    docs = [{"hostname": f"n{i:05d}.lab", "state": STATES[i % 5], "owner": "ci" if i % 5 == 1 else None,
             "job_id": f"job-{i % 97}" if i % 5 == 1 else None, "tags": {"rack": f"r{i % 40:02d}", "memory": 2 ** 34},
             "_created": now, "_updated": now, "_etag": f"{i:040x}"} for i in range(count)]
    for start in range(0, count, 1000):
        db.machines.insert_many(docs[start:start + 1000])


def measure(url, count, repeat):
    figures = {}
    last = max(1, -(-count // 50))
    with requests.Session() as http:
        http.headers["Accept"] = "text/html"
        for name, path in PAGES.items():
            times = []
            for _ in range(repeat):
                start = time.perf_counter()
                response = http.get(url + path.format(last=last), timeout=120)
                times.append(time.perf_counter() - start)
                response.raise_for_status()
            figures[name] = statistics.median(times) * 1000
    return figures


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--machines", type=int, default=10000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    os.environ.setdefault("DO_NOT_TRACK", "1")
    with tempfile.TemporaryDirectory() as tmp:
        localdb = LocalDB(tmp)
        uri = localdb.start()
        client = pymongo.MongoClient(uri)
        results = {}
        try:
            for count in (100, args.machines):
                name = f"bench_{count}"
                client.drop_database(name)
                seed(client[name], count)
                server = LiveServer({"MONGO_URI": uri, "MONGO_DBNAME": name, "SECRET_KEY": "bench"})
                try:
                    results[count] = measure(server.url, count, args.repeat)
                finally:
                    server.stop()
                client.drop_database(name)
        finally:
            client.close()
            localdb.stop()
    base, big = results[100], results[args.machines]
    print(f"{'page':<18}{'100 machines':>14}{f'{args.machines} machines':>18}{'ratio':>8}")
    for name in PAGES:
        print(f"{name:<18}{base[name]:>11.1f} ms{big[name]:>15.1f} ms{big[name] / base[name]:>8.1f}")


if __name__ == "__main__":
    main()
