"""Benchmark: `rmctl import` / `rmctl export` of 10,000 machines, against one POST per row measured in the same run.

Run: .venv/bin/python bench/cli_import.py [--rows N]. Prints figures and ratios; asserts nothing.
"""

import argparse
import csv
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.cli_startup import rmctl_command, serve_with_machines  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10000)
    parser.add_argument("--sample", type=int, default=200, help="rows POSTed one by one for the baseline")
    args = parser.parse_args()
    os.environ.setdefault("DO_NOT_TRACK", "1")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    import requests

    data_dir = tempfile.mkdtemp(prefix="rm-bench-")
    try:
        url, stop = serve_with_machines(0, data_dir)
        try:
            auth = ("bench", "bench-password")
            with requests.Session() as session:
                start = time.perf_counter()
                for i in range(args.sample):
                    session.post(f"{url}/machines", json={"hostname": f"single-{i}", "state": "idle"},
                                 auth=auth, timeout=60).raise_for_status()
                per_row = (time.perf_counter() - start) / args.sample
            path = os.path.join(data_dir, "machines.csv")
            with open(path, "w", newline="", encoding="utf-8") as fh:
                writer = csv.writer(fh)
                writer.writerow(["hostname", "state", "owner", "tags.memory", "tags.rack"])
                for i in range(args.rows):
                    writer.writerow([f"m{i:06d}", "idle", "ci" if i % 2 else "", 17179869184, f"r{i % 40}"])
            env = dict(os.environ, RM_ENDPOINT=url, RM_USERNAME=auth[0], RM_PASSWORD=auth[1], NO_PROXY="127.0.0.1")
            rmctl = rmctl_command()
            timings = {}
            for name, argv in [
                (f"import {args.rows} rows (all new)", ["import", path]),
                (f"export {args.rows + args.sample} rows to CSV", ["export", os.path.join(data_dir, "out.csv")]),
                (f"import {args.rows} rows again (all unchanged)", ["import", path]),
            ]:
                start = time.perf_counter()
                done = subprocess.run(rmctl + argv, env=env, capture_output=True, text=True)
                timings[name] = time.perf_counter() - start
                print(f"  {name}: exit {done.returncode}, {done.stdout.strip() or done.stderr.strip()}")
        finally:
            stop()
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)

    one_by_one = per_row * args.rows
    print(f"\n{'operation':45} {'seconds':>9} {'rows/s':>9}")
    print(f"{'one POST per row (from ' + str(args.sample) + ' rows, empty db)':45} {one_by_one:9.1f} "
          f"{1 / per_row:9.0f}")
    for name, seconds in timings.items():
        print(f"{name:45} {seconds:9.1f} {args.rows / seconds:9.0f}")
    first = timings[f"import {args.rows} rows (all new)"]
    print(f"\nbulk import vs one POST per row (extrapolated, and POSTs slow down as the db grows): "
          f"{one_by_one / first:.1f}x faster")


if __name__ == "__main__":
    main()
