"""Benchmark 4: rmctl start-up (--version, list of 100 machines) against `python -c "import requests"`."""

import importlib.util
import os
import statistics
import subprocess
import sys
import time

from .reads import seed_machines

if importlib.util.find_spec("resource_manager.cli.main") is None:
    raise ImportError("the CLI (resource_manager/cli.py) is not on this branch")


def rmctl():
    """The installed rmctl next to this Python, else the module."""
    script = os.path.join(os.path.dirname(sys.executable), "rmctl")
    return [script] if os.path.exists(script) else [sys.executable, "-m", "resource_manager.cli.main"]


def timed(argv, env=None):
    """Wall-clock seconds of one run of `argv` (which must succeed)."""
    start = time.perf_counter()
    subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                   check=True, timeout=120)
    return time.perf_counter() - start


def startup(env, runs):
    """Median wall time of rmctl --version and rmctl list (100 machines), against importing requests."""
    runs = max(runs, 10)  # a start-up is short: more runs for a steady median
    db = env.database("bench_cli")
    seed_machines(db, 100)
    url = env.api(db.name).url
    child_env = dict(os.environ, RM_ENDPOINT=url, NO_PROXY="127.0.0.1,localhost")
    baseline, version, listing = [], [], []
    for _ in range(runs):  # interleaved
        baseline.append(timed([sys.executable, "-c", "import requests"]))
        version.append(timed(rmctl() + ["--version"]))
        listing.append(timed(rmctl() + ["list", "--format", "json"], child_env))
    env.stop_api(db.name)
    ms = [v * 1000 for v in baseline]
    common = {"unit": "ms", "baseline": ms, "baseline_name": 'python -c "import requests"',
              "higher_is_better": False, "errors": 0}
    return [
        dict(common, name="rmctl --version", ours=[v * 1000 for v in version], notes="process start to exit"),
        dict(common, name="rmctl list (100 machines, JSON)", ours=[v * 1000 for v in listing],
             notes=f"incl. the HTTP request; baseline median {statistics.median(ms):.0f} ms"),
    ]
