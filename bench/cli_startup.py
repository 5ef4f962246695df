"""Benchmark: how fast rmctl starts, against `python -c "import requests"` measured in the same run.

Run: .venv/bin/python bench/cli_startup.py [--runs N]. Prints figures and ratios; asserts nothing.
"""

import argparse
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def timed(argv, runs, env=None):
    """Return the median and best wall time of running `argv` `runs` times."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times), min(times)


def rmctl_command():
    """Return the installed rmctl next to this Python, else the module."""
    script = os.path.join(os.path.dirname(sys.executable), "rmctl")
    return [script] if os.path.exists(script) else [sys.executable, "-m", "resource_manager.cli.main"]


def serve_with_machines(count, data_dir):
    """Start the embedded database and the API with `count` machines; return (url, stop)."""
    from werkzeug.serving import make_server

    from resource_manager.api import auth
    from resource_manager.app import create_app
    from resource_manager.localdb import LocalDB

    db = LocalDB(os.path.join(data_dir, "db"))
    uri = db.start()
    users = os.path.join(data_dir, "users.json")
    auth.set_user(users, "bench", "bench-password", "operator")
    app = create_app({"MONGO_URI": uri, "MONGO_DBNAME": "bench", "USERS_FILE": users})
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}"
    import requests

    docs = [{"hostname": f"bench-{i:04d}", "state": "idle", "tags": {"rack": f"r{i % 8}"}} for i in range(count)]
    if docs:
        requests.post(url + "/machines", json=docs, auth=("bench", "bench-password"), timeout=60).raise_for_status()

    def stop():
        server.shutdown()
        server.server_close()
        db.stop()

    return url, stop


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--machines", type=int, default=100)
    args = parser.parse_args()
    os.environ.setdefault("DO_NOT_TRACK", "1")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    py = sys.executable
    rmctl = rmctl_command()
    rows = [
        ("python -c pass", [py, "-c", "pass"]),
        ("python -c 'import requests'", [py, "-c", "import requests"]),
        ("rmctl --version", rmctl + ["--version"]),
        ("rmctl --help", rmctl + ["--help"]),
    ]
    results = {name: timed(argv, args.runs) for name, argv in rows}
    data_dir = tempfile.mkdtemp(prefix="rm-bench-")
    try:
        url, stop = serve_with_machines(args.machines, data_dir)
        try:
            env = dict(os.environ, RM_ENDPOINT=url, NO_PROXY="127.0.0.1")
            for fmt in ("json", "table"):
                name = f"rmctl list ({args.machines} machines, {fmt})"
                results[name] = timed(rmctl + ["list", "--format", fmt], args.runs, env)
        finally:
            stop()
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)

    baseline = results["python -c 'import requests'"][0]
    print(f"{'command':45} {'median ms':>10} {'best ms':>9} {'x import requests':>18}")
    for name, (median, best) in results.items():
        print(f"{name:45} {median * 1000:10.1f} {best * 1000:9.1f} {median / baseline:18.2f}")
    print(f"\n{args.runs} runs each; rmctl = {' '.join(rmctl)}")


if __name__ == "__main__":
    main()
