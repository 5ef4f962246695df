"""The Go program (main.go beside this file): built once per source version, started, awaited.

FerretDB in a small Go program of ours, over PostgreSQL (launcher.py) or, the former default,
SQLite files (migrate.py carries those over). Building needs the Go toolchain once; the binary is
kept in an ignored cache directory. A started program dies with the thread that started it
(orphans.py), prints `ready <mongodb URI>` once it listens, and answers pings after.
"""

import fcntl
import glob
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import pymongo
import pymongo.errors

from .orphans import dying_with_us

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCES = ("main.go", "go.mod", "go.sum")


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


def sqlite_files(data_dir):
    """Return the SQLite databases of the former default engine in `data_dir`."""
    return sorted(glob.glob(os.path.join(glob.escape(data_dir), "*.sqlite")))


def spawn_ferretdb(binary, listen, backend, log_path):
    """Start the Go program with `backend` arguments; it dies with this process."""
    env = dict(os.environ, DO_NOT_TRACK="1")
    argv, _none = dying_with_us(
        [binary, "-listen", listen, *backend, "-log-level", os.environ.get("RM_LOCALDB_LOG_LEVEL", "warn")],
        signal.SIGTERM)
    with open(log_path, "ab") as logfile:
        return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=logfile, stdin=subprocess.DEVNULL, env=env)


def read_ready_line(process, timeout):
    """Return the mongodb:// URI the Go program prints once it listens, or None."""
    result = {}

    def read():
        result["line"] = process.stdout.readline().decode(errors="replace").strip()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout)
    line = result.get("line", "")
    return line.split(" ", 1)[1] if line.startswith("ready ") else None


def wait_for_ping(uri, process, timeout):
    """Wait until the server at `uri` answers a ping; raise LocalDBError if it does not in time."""
    deadline = time.monotonic() + timeout
    client = pymongo.MongoClient(uri, serverSelectionTimeoutMS=500)
    try:
        while True:
            try:
                client.admin.command("ping")
                return
            except pymongo.errors.PyMongoError as e:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise LocalDBError(f"the embedded database does not answer: {e}") from e
                time.sleep(0.1)
    finally:
        client.close()
