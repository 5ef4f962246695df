"""Atomic writes on every engine: MongoDB's document-level atomicity, and a host lock for FerretDB.

MongoDB applies a filtered update, replace, delete or findAndModify to each document
atomically: `{_id, _etag}` or `{_id, state: "pending"}` is checked against the document
it changes. FerretDB v1 (the embedded engine) does not: it reads the matching documents,
checks the filter in Go, then writes whole documents back. Two writers interleave, a filter
is checked against a stale read, and the loser overwrites the winner's other fields too.

So on FerretDB every such write of ours runs under one host-wide exclusive lock
(`flock` on a file named after the database's address and name). With all our writers
serialised, FerretDB's read-then-write is atomic, and code written for MongoDB holds on
both. The embedded engine listens on loopback only, so every writer is on this host; the
kernel drops a dead process's lock. Only the write itself is held, never a scan: reads and
inserts stay unlocked (an insert that collides on a unique key is atomic by itself).

Writes that bypass us (a raw driver, mongosh) are not covered; on FerretDB keep them to
inserts, or stop the service first.
"""

import fcntl
import functools
import hashlib
import logging
import os
import tempfile
import threading

from pymongo.collection import Collection

log = logging.getLogger(__name__)

# The pymongo Collection methods that read, check a filter and write.
CONDITIONAL_WRITES = frozenset((
    "update_one", "update_many", "replace_one", "delete_one", "delete_many",
    "find_one_and_update", "find_one_and_replace", "find_one_and_delete", "bulk_write",
))
MODES = ("auto", "host", "off")


class HostLock:
    """A reentrant, host-wide exclusive lock on `path`: threads and processes queue in the kernel.

    Blocking flock, not a polling library: waiters are woken in turn instead of sleeping
    between tries (filelock's 50 ms polls gave 1 s waits under four contending processes).
    """

    _init_lock = threading.Lock()

    def __init__(self, path):
        self.path = path
        self._pid = None

    def _open(self):
        # Per process: a forked child must not share its parent's open file (and so its lock).
        if self._pid == os.getpid():
            return
        with self._init_lock:
            if self._pid == os.getpid():
                return
            self._mutex = threading.RLock()
            self._depth = 0
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
            self._pid = os.getpid()

    def __enter__(self):
        self._open()
        self._mutex.acquire()
        if self._depth == 0:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX)
            except BaseException:
                self._mutex.release()
                raise
        self._depth += 1
        return self

    def __exit__(self, *exc):
        self._depth -= 1
        if self._depth == 0:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        self._mutex.release()


class _NoLock:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None


NO_LOCK = _NoLock()


class AtomicCollection:
    """A pymongo Collection whose conditional writes hold `lock`; everything else passes through."""

    __slots__ = ("_collection", "_lock")

    def __init__(self, collection, lock):
        self._collection = collection
        self._lock = lock

    def __getattr__(self, name):
        attr = getattr(self._collection, name)
        if name not in CONDITIONAL_WRITES:
            return attr

        @functools.wraps(attr)
        def locked(*args, **kwargs):
            with self._lock:
                return attr(*args, **kwargs)

        return locked

    def __getitem__(self, name):
        return AtomicCollection(self._collection[name], self._lock)

    def locked(self):
        """Return the lock, to make several writes one atomic step (e.g. insert, then undo it)."""
        return self._lock


class AtomicDatabase:
    """A pymongo Database whose collections make conditional writes atomic (see the module doc)."""

    __slots__ = ("_db", "_lock")

    def __init__(self, db, lock):
        self._db = db
        self._lock = lock

    def __getitem__(self, name):
        return AtomicCollection(self._db[name], self._lock)

    def __getattr__(self, name):
        attr = getattr(self._db, name)
        return AtomicCollection(attr, self._lock) if isinstance(attr, Collection) else attr

    def locked(self):
        """Return the lock, to make several writes one atomic step."""
        return self._lock


class Engine:
    """What the database is, and how our writes are made atomic on it."""

    def __init__(self, name, version, mode, lock_path=None):
        self.name, self.version, self.mode, self.lock_path = name, version, mode, lock_path
        self.lock = HostLock(lock_path) if lock_path else NO_LOCK

    def describe(self):
        """Return the /healthz summary."""
        writes = {"host-lock": "serialised by a host-wide lock", "database": "atomic in the database",
                  "off": "NOT atomic (serialisation switched off)"}[self.mode]
        return {"engine": self.name, "engine_version": self.version, "writes": writes}

    def wrap(self, db):
        """Return `db` with this engine's atomic writes."""
        return AtomicDatabase(db, self.lock)


def lock_path(db, directory=None):
    """Return the host lock file for database `db`: one per server address and database name."""
    addresses = sorted(f"{host}:{port}" for host, port in db.client.topology_description.server_descriptions())
    key = hashlib.sha256(f"{','.join(addresses)}/{db.name}".encode()).hexdigest()[:24]
    return os.path.join(directory or tempfile.gettempdir(), f"resource-manager-writes-{key}.lock")


def detect(db, mode="auto", lock_dir=None):
    """Ask the server what it is (buildInfo) and return the Engine for `mode` (auto, host, off).

    Raises ValueError for an unknown mode, PyMongoError when the database does not answer.
    """
    if mode not in MODES:
        raise ValueError(f"WRITE_SERIALISATION must be one of {', '.join(MODES)}, not {mode!r}")
    info = db.client.admin.command("buildInfo")
    ferret = "ferretdbVersion" in info
    name = "ferretdb" if ferret else "mongodb"
    version = info.get("ferretdbVersion") if ferret else info.get("version")
    if mode == "off":
        if ferret:
            log.warning("WRITE_SERIALISATION=off on FerretDB: concurrent writes can be lost (for measurements only)")
        return Engine(name, version, "off")
    if ferret or mode == "host":
        path = lock_path(db, lock_dir)
        hosts = {host for host, _port in db.client.topology_description.server_descriptions()}
        if not hosts <= {"127.0.0.1", "localhost", "::1"}:
            log.warning("FerretDB at %s is not on loopback: the write lock serialises this host only; "
                        "run every API process on one host", ", ".join(sorted(hosts)))
        engine = Engine(name, version, "host-lock", path)
    else:
        engine = Engine(name, version, "database")
    log.info("database engine %s %s: writes %s%s", name, version, engine.describe()["writes"],
             f" ({path})" if engine.lock_path else "")
    return engine
