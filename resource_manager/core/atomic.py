"""Atomic writes on every engine: MongoDB's document-level atomicity, and a write lock for FerretDB.

MongoDB applies a filtered update, replace, delete or findAndModify to each document
atomically: `{_id, _etag}` or `{_id, state: "pending"}` is checked against the document
it changes. FerretDB v1 (the embedded engine) does not: it reads the matching documents,
checks the filter in Go, then writes whole documents back. Two writers interleave, a filter
is checked against a stale read, and the loser overwrites the winner's other fields too.

So on FerretDB every such write of ours runs under one exclusive lock whose scope is the
storage's: with all our writers serialised, FerretDB's read-then-write is atomic, and code
written for MongoDB holds on both. Only the write itself is held, never a scan: reads and
inserts stay unlocked (an insert that collides on a unique key is atomic by itself).

- FerretDB over PostgreSQL: a PostgreSQL advisory lock in the database FerretDB uses (scope
  `database`: every API host sees it), keyed by that database's identity (storage.py).
- FerretDB over SQLite: a `flock` keyed by the database file's resolved path (scope `host`:
  SQLite is one host by nature).
- FerretDB whose storage is unknown or unreachable by us: writes are refused (503), never served
  unserialised; reads go on. Unknown is permanent (the log names the fix); unreachable is tried
  again at the next write, at most every RETRY_SECONDS.
- MongoDB: nothing added.

Writes that bypass us (a raw driver, mongosh) are not covered; on FerretDB keep them to
inserts, or stop the service first.
"""

import dataclasses
import functools
import hashlib
import logging
import os
import sqlite3
import tempfile
import threading
import time

import psycopg
from pymongo.collection import Collection

from . import storage as storages
from .locks import NO_LOCK, AdvisoryLock, HostLock, RefusingLock, WriteLockUnavailable, WritesRefused

__all__ = ["AtomicDatabase", "Engine", "WriteLockUnavailable", "WriteSettings", "WritesRefused", "detect"]

log = logging.getLogger(__name__)

# The pymongo Collection methods that read, check a filter and write.
CONDITIONAL_WRITES = frozenset((
    "update_one", "update_many", "replace_one", "delete_one", "delete_many",
    "find_one_and_update", "find_one_and_replace", "find_one_and_delete", "bulk_write",
))
MODES = ("auto", "host", "off")
RETRY_SECONDS = 5.0


class AtomicCollection:
    """A pymongo Collection whose conditional writes hold the engine's lock; everything else passes through."""

    __slots__ = ("_collection", "_engine")

    def __init__(self, collection, engine):
        self._collection = collection
        self._engine = engine

    def __getattr__(self, name):
        attr = getattr(self._collection, name)
        if name not in CONDITIONAL_WRITES:
            return attr

        @functools.wraps(attr)
        def locked(*args, **kwargs):
            with self._engine.lock:
                return attr(*args, **kwargs)

        return locked

    def __getitem__(self, name):
        return AtomicCollection(self._collection[name], self._engine)

    def locked(self):
        """Return the lock, to make several writes one atomic step (e.g. insert, then undo it)."""
        return self._engine.lock


class AtomicDatabase:
    """A pymongo Database whose collections make conditional writes atomic (see the module doc)."""

    __slots__ = ("_db", "_engine")

    def __init__(self, db, engine):
        self._db = db
        self._engine = engine

    def __getitem__(self, name):
        return AtomicCollection(self._db[name], self._engine)

    def __getattr__(self, name):
        attr = getattr(self._db, name)
        return AtomicCollection(attr, self._engine) if isinstance(attr, Collection) else attr

    def locked(self):
        """Return the lock, to make several writes one atomic step."""
        return self._engine.lock


@dataclasses.dataclass(frozen=True)
class WriteSettings:
    """How writes are serialised: `mode` (auto, host, off), where host locks live, what FerretDB stores in."""

    mode: str = "auto"
    lock_dir: str = None
    postgres_url: str = None
    sqlite_dir: str = None

    @classmethod
    def from_config(cls, config):
        """Return the settings of an app config (or any mapping of WRITE_SERIALISATION, ... keys)."""
        return cls(config.get("WRITE_SERIALISATION") or "auto", config.get("WRITE_LOCK_DIR"),
                   config.get("POSTGRES_URL"), config.get("SQLITE_DIR"))


class _Pending:
    """The lock while the storage cannot be reached to prove it: writes answer 503 and try again later."""

    kind, scope = "pending", None

    def __init__(self, reason):
        self.reason = reason

    def close(self):
        return None

    def __enter__(self):
        raise WriteLockUnavailable(f"the write lock's database cannot be reached: {self.reason}")

    def __exit__(self, *exc):
        return None


class Engine:
    """What the database is, and how our writes are made atomic on it (`lock`, read at each write)."""

    def __init__(self, name, version, mode, lock=NO_LOCK, storage=None):
        self.name, self.version, self.mode = name, version, mode
        self._lock, self.storage = lock, storage
        self._prove, self._retry_at = None, 0.0
        self._retry_lock = threading.Lock()

    @property
    def lock(self):
        """The lock conditional writes hold; while the storage is unreachable, tried again every RETRY_SECONDS."""
        if self._prove is not None and time.monotonic() >= self._retry_at:
            with self._retry_lock:
                if self._prove is not None and time.monotonic() >= self._retry_at:
                    self.resolve(self._prove)
        return self._lock

    @property
    def refusal(self):
        """Why writes are refused (permanently or for now), or None when they are served."""
        return getattr(self.lock, "reason", None)

    def resolve(self, prove):
        """Set the lock to what `prove()` returns as (storage, lock); keep `prove` for later if unreachable."""
        try:
            self.storage, self._lock = prove()
            self._prove = None
        except storages.StorageNotRecorded as e:  # asked again at the next write: a launcher may record it now
            if getattr(self._lock, "reason", None) != str(e):
                log.error("writes REFUSED (503) on %s %s: %s. Reads are served.", self.name, self.version, e)
            self._lock, self._prove, self._retry_at = RefusingLock(str(e)), prove, 0.0
        except storages.StorageUnproven as e:
            self._lock, self._prove = RefusingLock(str(e)), None
            log.error("writes REFUSED (503) on %s %s: %s. Reads are served.", self.name, self.version, e)
        except (psycopg.OperationalError, sqlite3.OperationalError, WriteLockUnavailable) as e:
            reason = " ".join(str(e).split())[:300]
            if getattr(self._lock, "reason", None) != reason:  # once, not at every try
                log.warning("writes answer 503 until the write lock's database answers: %s", reason)
            self._lock, self._prove = _Pending(reason), prove
            self._retry_at = time.monotonic() + RETRY_SECONDS
        else:
            log.info("database engine %s %s: writes %s", self.name, self.version, self.summary())

    def describe(self):
        """Return the /healthz summary: how writes are made atomic, which lock, its scope."""
        lock = self._lock
        writes = {"postgresql-advisory": "serialised by a PostgreSQL advisory lock",
                  "flock": "serialised by a host-wide lock"}.get(lock.kind)
        if writes is None:
            writes = (f"refused: {self.refusal}" if isinstance(lock, RefusingLock)
                      else f"503 for now: {self.refusal}" if isinstance(lock, _Pending)
                      else "NOT atomic (serialisation switched off)" if self.mode == "off"
                      else "atomic in the database")
        return {"engine": self.name, "engine_version": self.version, "writes": writes,
                "write_lock": lock.kind, "write_lock_scope": lock.scope}

    def summary(self):
        """Return how writes are made atomic, in words, with where the lock lives (for the log)."""
        described = self.describe()
        if described["write_lock_scope"] is None:
            return described["writes"]
        where = f"; {self.storage.identity}" if self.storage and str(self._lock) not in self.storage.identity else ""
        return f"{described['writes']} (scope {described['write_lock_scope']}: {self._lock}{where})"

    def close(self):
        """Close this process's connection or file of the lock (when the app or the command is done)."""
        self._lock.close()

    def wrap(self, db):
        """Return `db` with this engine's atomic writes."""
        return AtomicDatabase(db, self)


def lock_path(key, directory=None):
    """Return the host lock file for a storage key (hex)."""
    return os.path.join(directory or tempfile.gettempdir(), f"resource-manager-writes-{key[:24]}.lock")


def _address_key(db):
    # MongoDB needs no lock; WRITE_SERIALISATION=host there is for measurements, keyed as it always was.
    addresses = sorted(f"{host}:{port}" for host, port in db.client.topology_description.server_descriptions())
    return hashlib.sha256(f"{','.join(addresses)}/{db.name}".encode()).hexdigest()


def _ferretdb_storage(db, settings):
    """Return FerretDB's proven Storage for `db`, from the settings, else from the embedded launcher's record."""
    if settings.postgres_url:
        return storages.postgresql(db, settings.postgres_url)
    if settings.sqlite_dir:
        return storages.sqlite(db, settings.sqlite_dir)
    record = storages.launcher_record(db.client)
    if record and "postgres_url" in record:
        return storages.postgresql(db, record["postgres_url"], "the embedded database's record")
    if record:
        return storages.sqlite(db, record["sqlite_dir"], "the embedded database's record")
    raise storages.StorageNotRecorded(
        "FerretDB needs a write lock that every writer sees, and this server does not know what FerretDB stores "
        "its data in: set RM_POSTGRES_URL to the PostgreSQL database FerretDB uses (FerretDB over SQLite: "
        "RM_SQLITE_DIR to its directory)")


def _ferretdb_lock(db, settings):
    """Return (Storage, lock) for FerretDB: the advisory lock on PostgreSQL, a flock of the SQLite file itself.

    The SQLite file is its own lock file: every process on the host that writes to it sees the
    same lock, whatever its RM_WRITE_LOCK_DIR (SQLite's own locks are fcntl locks, which a flock
    does not touch on a local file system).
    """
    found = _ferretdb_storage(db, settings)
    if found.kind == "sqlite":
        return found, HostLock(found.path, create=False)
    if settings.mode == "host":
        log.warning("WRITE_SERIALISATION=host on FerretDB over PostgreSQL: the write lock serialises the processes "
                    "of this host only; writes from any other host can be lost (for measurements only)")
        return found, HostLock(lock_path(found.key, settings.lock_dir))
    lock = AdvisoryLock(functools.partial(storages.connect_postgres, found.postgres_url), found.advisory_key(),
                        found.identity)
    with lock:  # taken once now: a PostgreSQL that refuses the lock's session fails at start, not at a write
        pass
    return found, lock


def detect(db, settings=None):
    """Ask the server what it is (buildInfo) and return the Engine that `settings` (WriteSettings) call for.

    Raises ValueError for an unknown mode, PyMongoError when the database does not answer.
    """
    settings = settings or WriteSettings()
    if settings.mode not in MODES:
        raise ValueError(f"WRITE_SERIALISATION must be one of {', '.join(MODES)}, not {settings.mode!r}")
    info = db.client.admin.command("buildInfo")
    ferret = "ferretdbVersion" in info
    name = "ferretdb" if ferret else "mongodb"
    engine = Engine(name, info.get("ferretdbVersion") if ferret else info.get("version"), settings.mode)
    if settings.mode == "off":
        if ferret:
            log.warning("WRITE_SERIALISATION=off on FerretDB: concurrent writes can be lost (for measurements only)")
    elif ferret:
        engine.resolve(functools.partial(_ferretdb_lock, db, settings))
        return engine
    elif settings.mode == "host":
        engine._lock = HostLock(lock_path(_address_key(db), settings.lock_dir))
    if settings.postgres_url or settings.sqlite_dir:
        log.info("RM_POSTGRES_URL / RM_SQLITE_DIR unused: the engine is %s", name)
    log.info("database engine %s %s: writes %s", engine.name, engine.version, engine.summary())
    return engine
