"""Build and run the embedded database (see main.go beside this file)."""

import ctypes
import fcntl
import hashlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import pymongo
import pymongo.errors

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCES = ("main.go", "go.mod", "go.sum")
log = logging.getLogger(__name__)


class LocalDBError(RuntimeError):
    """The embedded database could not be built, started or reached."""


def _source_digest():
    digest = hashlib.sha256()
    for name in SOURCES:
        with open(os.path.join(HERE, name), "rb") as fh:
            digest.update(fh.read())
    return digest.hexdigest()[:16]


def build_dir():
    """Return where built binaries are kept (RM_LOCALDB_BUILD_DIR, else .build/ here)."""
    return os.environ.get("RM_LOCALDB_BUILD_DIR") or os.path.join(HERE, ".build")


def build(quiet=False):
    """Return the path of the binary for the current sources, building it if needed.

    Raises LocalDBError when Go is missing or the build fails.
    """
    out_dir = build_dir()
    binary = os.path.join(out_dir, f"rm-localdb-{_source_digest()}")
    if os.path.exists(binary):
        return binary
    go = shutil.which("go")
    if go is None:
        raise LocalDBError("the Go toolchain ('go') is needed to build the embedded database")
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one build at a time, others wait and reuse it
        if os.path.exists(binary):
            return binary
        if not quiet:
            print("building the embedded database (FerretDB) with Go; the first build takes a minute or two...",
                  file=sys.stderr, flush=True)
        tmp = f"{binary}.tmp{os.getpid()}"
        # -mod=readonly: go.sum pins every module; GOTOOLCHAIN=local: never fetch another Go.
        env = dict(os.environ, GOFLAGS="-mod=readonly -buildvcs=false", GOTOOLCHAIN="local", CGO_ENABLED="0")
        result = subprocess.run([go, "build", "-trimpath", "-o", tmp, "."], cwd=HERE, env=env,
                                capture_output=True, text=True)
        if result.returncode != 0:
            raise LocalDBError(f"building the embedded database failed:\n{result.stderr.strip()}")
        os.replace(tmp, binary)
    return binary


def _die_with_parent():
    # Linux: the database goes when its launcher goes, even on SIGKILL.
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class LocalDB:
    """One embedded database process serving `data_dir` on 127.0.0.1:`port` (0: any free port)."""

    def __init__(self, data_dir, port=0, log_path=None):
        self.data_dir = os.path.abspath(data_dir)
        self.port = port
        self.log_path = log_path or os.path.join(self.data_dir, "localdb.log")
        self.process = None
        self.uri = None

    def start(self, timeout=60):
        """Start the database and return its mongodb:// URI once it answers a ping.

        Raises LocalDBError when it does not come up within `timeout` seconds.
        """
        binary = build()
        os.makedirs(self.data_dir, exist_ok=True)
        env = dict(os.environ, DO_NOT_TRACK="1")
        logfile = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [binary, "-listen", f"127.0.0.1:{self.port}", "-data-dir", self.data_dir],
            stdout=subprocess.PIPE, stderr=logfile, stdin=subprocess.DEVNULL, env=env,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )
        logfile.close()
        self.uri = self._read_ready_line(timeout)
        self.port = int(self.uri.rsplit(":", 1)[1].strip("/"))
        self._wait_for_ping(timeout)
        return self.uri

    def _read_ready_line(self, timeout):
        result = {}

        def read():
            result["line"] = self.process.stdout.readline().decode(errors="replace").strip()

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        reader.join(timeout)
        line = result.get("line", "")
        if not line.startswith("ready "):
            self.stop()
            raise LocalDBError(f"the embedded database did not start (see {self.log_path}): {line or 'no output'}")
        return line.split(" ", 1)[1]

    def _wait_for_ping(self, timeout):
        deadline = time.monotonic() + timeout
        client = pymongo.MongoClient(self.uri, serverSelectionTimeoutMS=500)
        try:
            while True:
                try:
                    client.admin.command("ping")
                    return
                except pymongo.errors.PyMongoError as e:
                    if time.monotonic() > deadline or self.process.poll() is not None:
                        self.stop()
                        raise LocalDBError(f"the embedded database does not answer: {e}") from e
                    time.sleep(0.1)
        finally:
            client.close()

    def stop(self, timeout=10):
        """Stop the database (SIGTERM, then SIGKILL after `timeout` seconds)."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout:
            self.process.stdout.close()
        self.process = None

    def kill(self):
        """Kill the database at once (SIGKILL), as a crash would."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process.stdout.close()
            self.process = None

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()
