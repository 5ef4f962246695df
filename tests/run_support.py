"""Helpers for the `rmctl run` tests: rmctl as a real process around tests/run_child.py, and what it left."""

import json
import os
import subprocess
import sys
import threading
import time

from .cli_helpers import ROOT, subprocess_env

CHILD = os.path.join(ROOT, "tests", "run_child.py")


class Lines:
    """A stream read line by line in a thread; `wait_for(predicate)` returns the first line that satisfies it."""

    def __init__(self, stream):
        self.lines = []
        self.closed = False
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream):
        for line in stream:
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()
        with self._changed:
            self.closed = True
            self._changed.notify_all()

    def wait_for(self, predicate, timeout=60):
        """Return the first line satisfying `predicate`. Raises AssertionError at EOF or after `timeout` s."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for line in self.lines:
                    if predicate(line):
                        return line
                left = deadline - time.monotonic()
                if self.closed or left <= 0:
                    raise AssertionError(f"no such line; got {self.lines!r}")
                self._changed.wait(left)

    def text(self, timeout=30):
        """Return everything, once the stream has ended."""
        self._thread.join(timeout)
        return "".join(self.lines)


def argv(out_dir, *options, child_options=(), command=None):
    """Return the command line `rmctl run OPTIONS -- python tests/run_child.py OUT_DIR CHILD_OPTIONS`."""
    command = command or [sys.executable, CHILD, str(out_dir), *child_options]
    return [os.path.join(os.path.dirname(sys.executable), "rmctl"), "run", *options, "--", *command]


def environment(url, user="operator"):
    """Return the environment of an rmctl process talking to `url` as `user`."""
    from .support import PASSWORDS

    return subprocess_env(RM_ENDPOINT=url, RM_USERNAME=user, RM_PASSWORD=PASSWORDS[user])


class Run:
    """`rmctl run [options] -- python tests/run_child.py OUT` as a real process (stdin, stdout, stderr piped)."""

    def __init__(self, url, out_dir, *options, child_options=(), command=None, user="operator", **popen):
        self.out_dir = str(out_dir)
        self.argv = argv(self.out_dir, *options, child_options=child_options, command=command)
        popen.setdefault("stdin", subprocess.PIPE)
        popen.setdefault("stdout", subprocess.PIPE)
        popen.setdefault("stderr", subprocess.PIPE)
        self.proc = subprocess.Popen(self.argv, env=environment(url, user), text=True, cwd=ROOT, **popen)
        self.stdout = Lines(self.proc.stdout) if self.proc.stdout else None
        self.stderr = Lines(self.proc.stderr) if self.proc.stderr else None

    def ready(self, timeout=60):
        """Wait until the command runs (it printed "ready"); return its report."""
        self.stdout.wait_for(lambda line: line == "ready\n", timeout)
        return self.report()

    def report(self):
        with open(os.path.join(self.out_dir, "report.json"), encoding="utf-8") as fh:
            return json.load(fh)

    def signals(self):
        """The signals the command got, in order."""
        try:
            with open(os.path.join(self.out_dir, "signals"), encoding="utf-8") as fh:
                return fh.read().split()
        except FileNotFoundError:
            return []

    def tell(self, line):
        """Send the command its instruction ("exit 3", "kill SIGKILL")."""
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def finish(self, timeout=60):
        """Wait for rmctl to end; return (exit status, stdout, stderr)."""
        try:
            code = self.proc.wait(timeout)
        finally:
            self.kill()
        out = self.stdout.text() if self.stdout else ""
        err = self.stderr.text() if self.stderr else ""
        self.close()
        return code, out, err

    def kill(self):
        """SIGKILL rmctl if it still runs."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def close(self):
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream:
                try:
                    stream.close()
                except OSError:
                    pass


def await_end(session, rid, timeout=60):
    """Long-poll reservation `rid` until it is no longer active; return (it, seconds this took)."""
    started = time.monotonic()
    deadline = started + timeout
    while True:
        res = session.get(f"/reservations/{rid}", params={"wait": 10, "state": "active"}, timeout=30).json()
        if res["state"] != "active" or time.monotonic() > deadline:
            return res, time.monotonic() - started


def kill_leftover(pid):
    """SIGKILL a command rmctl left running (after rmctl itself was killed)."""
    try:
        os.kill(pid, 9)
    except ProcessLookupError:
        pass
