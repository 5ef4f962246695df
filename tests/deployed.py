"""The API as deployed: gunicorn with several workers, a subprocess on 127.0.0.1 (tests and benchmarks)."""

import os
import signal
import subprocess
import sys
import time

import requests

from .support import free_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))



class Gunicorn:
    """`gunicorn -c resource_manager/gunicorn_conf.py resource_manager.app:create_app()` on a free port."""

    def __init__(self, mongo_uri, dbname, users_file, log_path, workers=4, threads=4, env=None, root=ROOT):
        self.root = root  # the checkout whose code serves (bench: another commit's worktree, for "before" figures)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.env = dict(os.environ, DO_NOT_TRACK="1", MONGO_URI=mongo_uri, RM_MONGO_DBNAME=dbname,
                        RM_USERS_FILE=users_file, RM_BIND=f"127.0.0.1:{self.port}", RM_ACCESS_LOG="/dev/null",
                        NO_PROXY="127.0.0.1,localhost", **(env or {}))
        if root != ROOT:
            self.env["PYTHONPATH"] = root
        # None: what resource_manager/gunicorn_conf.py chooses, as deployed.
        for name, value in (("RM_WORKERS", workers), ("RM_THREADS", threads)):
            if value is None:
                self.env.pop(name, None)
            else:
                self.env[name] = str(value)
        self.process = None

    def start(self, timeout=60):
        """Start gunicorn and wait until /healthz answers 200. Raises RuntimeError if it does not."""
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "-c", os.path.join(self.root, "resource_manager",
                                                                      "gunicorn_conf.py"),
                 "resource_manager.app:create_app()"],
                cwd=self.root, env=self.env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)  # a process group of its own: kill() takes master and workers
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.process.returncode}; see {self.log_path}")
            try:
                if requests.get(self.url + "/healthz", timeout=2).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"gunicorn did not answer within {timeout} s; see {self.log_path}")

    def worker_pids(self):
        """Return the pids of the worker processes (children of the gunicorn master)."""
        pids = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat", encoding="utf-8") as fh:
                    fields = fh.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == self.process.pid and fields[0] != "Z":
                pids.append(int(entry))
        return sorted(pids)

    def wait_for_workers(self, count, timeout=30, exclude=()):
        """Wait until `count` workers not in `exclude` run; return their pids. Raises RuntimeError on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pids = [p for p in self.worker_pids() if p not in exclude]
            if len(pids) >= count:
                return pids
            time.sleep(0.1)
        raise RuntimeError(f"gunicorn has {len(self.worker_pids())} workers, not {count}")

    def kill(self):
        """SIGKILL master and workers at once: a crash, nothing cleaned up."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def stop(self, timeout=30):
        """Stop gunicorn (SIGTERM, then SIGKILL)."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
