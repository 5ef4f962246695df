"""`make bench` / `python -m bench`: run the benchmarks, print the table, write it into BENCHMARKS.md."""

import argparse
import datetime
import os
import platform
import shutil
import statistics
import sys
import tempfile

import pymongo

from resource_manager import __version__
from resource_manager.api import auth
from resource_manager.localdb import LocalDB
from tests.deployed import ROOT, Gunicorn

BENCH_USERS = {"admin": ("bench-admin-pw", "admin"), "operator": ("bench-operator-pw", "operator")}
START, END = "<!-- bench:start -->", "<!-- bench:end -->"
SCALE_START, SCALE_END = "<!-- scale:start -->", "<!-- scale:end -->"
QUEUE_START, QUEUE_END = "<!-- queue:start -->", "<!-- queue:end -->"
REPLAY_START, REPLAY_END = "<!-- replay:start -->", "<!-- replay:end -->"


class Env:
    """The embedded database, a users file, and one deployed API (gunicorn) per database."""

    def __init__(self, workdir, workers=None, threads=None):
        self.workdir = workdir
        self.localdb = LocalDB(os.path.join(workdir, "db"))
        self.uri = self.localdb.start()
        self.client = pymongo.MongoClient(self.uri)
        self.users_file = os.path.join(workdir, "users.json")
        for name, (password, role) in BENCH_USERS.items():
            auth.set_user(self.users_file, name, password, role)
        self.workers, self.threads = workers, threads
        self._apis = {}

    def database(self, name):
        """A fresh, empty database."""
        self.client.drop_database(name)
        return self.client[name]

    def api(self, dbname, environ=None):
        """The API on `dbname` (with extra environment variables `environ`), started on first use."""
        if dbname not in self._apis:
            server = Gunicorn(self.uri, dbname, self.users_file, os.path.join(self.workdir, f"gunicorn-{dbname}.log"),
                              workers=self.workers, threads=self.threads, env=environ)
            self._apis[dbname] = server.start()
        return self._apis[dbname]

    def stop_api(self, dbname):
        """Stop the API on `dbname` and drop the database."""
        server = self._apis.pop(dbname, None)
        if server is not None:
            server.stop()
        self.client.drop_database(dbname)

    def close(self):
        for server in self._apis.values():
            server.stop()
        self.client.close()
        self.localdb.stop()


def benchmarks():
    """Every benchmark available on this branch, in the order of the issue."""
    from . import reads, reservations, writes

    def reserve_8(env, runs):
        return reservations.reserve(env, runs, clients=8)

    def reserve_32(env, runs):
        return reservations.reserve(env, runs, clients=32)

    found = []
    if _has_route("/reservations"):
        found += [reserve_8, reserve_32]
    found += [reads.get_by_hostname, reads.list_all, reads.list_unpaged, writes.patch_1, writes.patch_8,
              writes.patch_32, writes.lock_cost, writes.patch_vs_flock]
    try:
        from .cli import startup
        found.append(startup)
    except ImportError:  # the CLI is not on this branch
        pass
    if _has_route("/address-pools/<name>/allocate"):
        found.append(reservations.allocate)
    if _has_queue():
        from . import queue

        found += [queue.queue_grant_latency, queue.queue_saturated]
    if _has_route("/events"):
        from . import integrations

        found += [integrations.event_numbering, integrations.event_latency, integrations.hung_receiver,
                  integrations.ansible_inventory]
    return found


def _has_queue():
    """Whether this checkout has the reservation queue (issue 14)."""
    import importlib.util

    return importlib.util.find_spec("resource_manager.core.queue") is not None


def _has_route(path):
    """Whether this checkout serves `path` (the allocation code may not be merged yet)."""
    import logging

    from resource_manager.app import create_app

    logging.disable(logging.WARNING)  # the offline app's warnings about its missing database
    try:
        app = create_app({"MONGO_URI": "mongodb://127.0.0.1:9/", "MONGO_OPTIONS": {"connect": False,
                                                                                  "serverSelectionTimeoutMS": 1}})
    finally:
        logging.disable(logging.NOTSET)
    rules = {rule.rule.replace("<string:", "<").replace("<path:", "<") for rule in app.url_map.iter_rules()}
    with app.app_context():
        for client, _db in app.extensions["pymongo"].values():
            client.close()
    return any(rule.startswith(path.split("<")[0]) and rule.endswith(path.rsplit(">", 1)[-1]) for rule in rules)


def ratio(result):
    ours, base = statistics.median(result["ours"]), statistics.median(result["baseline"])
    # Always "how many times the baseline's cost ours is": >1 means slower than the baseline.
    return base / ours if result["higher_is_better"] else ours / base


def fmt(value):
    return f"{value:,.0f}" if value >= 100 else f"{value:,.3g}"


def table(results):
    lines = ["| benchmark | ours (median) | baseline (median) | time per operation, ours ÷ baseline | runs | notes |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in results:
        notes = r["notes"] + (f"; {r['errors']} errors" if r.get("errors") else "")
        lines.append(f"| {r['name']} | {fmt(statistics.median(r['ours']))} {r['unit']} | "
                     f"{fmt(statistics.median(r['baseline']))} {r['unit']} ({r['baseline_name']}) | "
                     f"{ratio(r):.2f}x | {len(r['ours'])} | {notes} |")
    return "\n".join(lines)


def machine():
    return (f"{platform.node() or 'host'}: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
            f"Python {platform.python_version()}, ResourceManager {__version__}, "
            f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC")


def write_markdown(path, text, start=START, end=END):
    """Replace a generated part of BENCHMARKS.md, keeping the hand-written findings around it."""
    old = open(path, encoding="utf-8").read() if os.path.exists(path) else "# Benchmarks\n"
    if start not in old:
        old += f"\n{start}\n{end}\n"
    head, _, rest = old.partition(start)
    _, _, tail = rest.partition(end)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(f"{head}{start}\n{text}\n{end}{tail}")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--runs", type=int, default=3, help="runs per benchmark (medians are reported)")
    parser.add_argument("--only", help="run only benchmarks whose function name contains this")
    parser.add_argument("--no-write", action="store_true", help="print the table, leave BENCHMARKS.md alone")
    parser.add_argument("--scale", default="10000",
                        help="fleet sizes for the interactive targets, comma-separated (e.g. 1000,10000,50000); "
                             "0 or empty skips them")
    parser.add_argument("--samples", type=int, default=25, help="samples per latency at each fleet size")
    parser.add_argument("--replay", default="10000,50000",
                        help="MACHINES,REQUESTS replayed through the scheduling rule (bench/replay.py); 0 skips it")
    args = parser.parse_args(argv)
    if args.replay != "0" and (not args.only or args.only in "replay"):
        from . import replay

        machines, requests = (int(n) for n in args.replay.split(","))
        print(f"replaying {machines:,} machines and {requests:,} requests through the rule ...", file=sys.stderr,
              flush=True)
        text = f"Measured on {machine()}.\n\n{replay.report(replay.run(machines, requests), machines, requests)}"
        print(text)
        if not args.no_write:
            write_markdown(os.path.join(ROOT, "BENCHMARKS.md"), text, REPLAY_START, REPLAY_END)
        if args.only:
            return 0
    sizes = [int(s.replace("_", "")) for s in args.scale.split(",") if s.strip() and int(s) > 0]
    workdir = tempfile.mkdtemp(prefix="rm-bench-")
    env = Env(workdir)
    results, scaled = [], {}
    try:
        if sizes and (not args.only or args.only in "scale"):
            from . import scale

            for size in sizes:
                print(f"running scale at {size:,} machines ...", file=sys.stderr, flush=True)
                scaled[size] = scale.measure(env, size, args.samples, workdir)
                print(scale.report({size: scaled[size]}), file=sys.stderr, flush=True)
        for bench in benchmarks():
            if args.only == "scale":
                break
            name = getattr(bench, "__name__", "")
            if args.only and args.only not in name and args.only not in repr(bench):
                continue
            print(f"running {name} ...", file=sys.stderr, flush=True)
            outcome = bench(env, args.runs)
            outcome = outcome if isinstance(outcome, list) else [outcome]
            results.extend(outcome)
            for line in table(outcome).splitlines()[2:]:
                print(line, file=sys.stderr, flush=True)
    finally:
        env.close()
        shutil.rmtree(workdir, ignore_errors=True)
    engine = env.localdb.engine
    intro = (f"Measured on {machine()}; the API as deployed (gunicorn, `resource_manager/gunicorn_conf.py` "
             f"defaults) on the embedded database (FerretDB over {engine}), clients on the same machine.")
    queue_results = [r for r in results if r.get("queue")]
    if results:
        text = f"{intro}\n\n{table(results)}"
        print(text)
        if not args.no_write and not args.only:
            write_markdown(os.path.join(ROOT, "BENCHMARKS.md"), text)
    if queue_results and not args.no_write:
        # The queue's figures also have a section of their own, written by `--only queue` too.
        write_markdown(os.path.join(ROOT, "BENCHMARKS.md"), f"{intro}\n\n{table(queue_results)}",
                       QUEUE_START, QUEUE_END)
    if scaled:
        from . import scale

        text = f"{intro}\n\n{scale.report(scaled)}"
        print(text)
        if not args.no_write:
            write_markdown(os.path.join(ROOT, "BENCHMARKS.md"), text, SCALE_START, SCALE_END)
    return 0


if __name__ == "__main__":
    sys.exit(main())
