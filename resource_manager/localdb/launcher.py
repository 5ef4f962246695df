"""Run the embedded database: PostgreSQL of ours (postgres.py), FerretDB over it (ferretdb.py), one lock."""

import fcntl
import logging
import os
import subprocess

import pymongo
import pymongo.errors

from ..core.storage import record_launcher_storage
from .ferretdb import (  # noqa: F401  (build: the package's, and `make localdb`'s)
    LocalDBError,
    build,
    read_ready_line,
    spawn_ferretdb,
    sqlite_files,
    wait_for_ping,
)
from .migrate import migrate_sqlite
from .postgres import Postgres, PostgresError

ENGINES = ("postgresql", "sqlite")
log = logging.getLogger(__name__)


def default_engine():
    """Return the storage of the embedded database: RM_LOCALDB_ENGINE, else postgresql."""
    engine = os.environ.get("RM_LOCALDB_ENGINE") or "postgresql"
    if engine not in ENGINES:
        raise LocalDBError(f"RM_LOCALDB_ENGINE must be one of {', '.join(ENGINES)}, not {engine!r}")
    return engine


class LocalDB:
    """The embedded database serving `data_dir` on 127.0.0.1:`port` (0: any free port).

    `engine` "postgresql" (the default, see default_engine()): FerretDB over a PostgreSQL server of
    ours with its data in DATA_DIR/pg; "sqlite": FerretDB over SQLite files in DATA_DIR, the former
    default. SQLite files found beside a PostgreSQL start are migrated into it (migrate.py).
    """

    def __init__(self, data_dir, port=0, log_path=None, engine=None):
        self.data_dir = os.path.abspath(data_dir)
        self.port = port
        self.log_path = log_path or os.path.join(self.data_dir, "localdb.log")
        self.engine = engine or default_engine()
        self.process = None
        self.postgres = None
        self.uri = None
        self._lock = None

    def start(self, timeout=60):
        """Start the database and return its mongodb:// URI once it answers a ping.

        Raises LocalDBError when it does not come up within `timeout` seconds, or when another
        launcher serves the same data directory.
        """
        binary = build()
        os.makedirs(self.data_dir, exist_ok=True)
        self._lock_data_dir()
        try:
            if self.engine == "postgresql":
                self.postgres = Postgres(os.path.join(self.data_dir, "pg"), os.path.join(self.data_dir, "postgres.log"))
                backend = ["-handler", "postgresql", "-postgresql-url", self.postgres.start(timeout)]
            else:
                backend = ["-handler", "sqlite", "-data-dir", self.data_dir]
            self.process = spawn_ferretdb(binary, f"127.0.0.1:{self.port}", backend, self.log_path)
            self.uri = read_ready_line(self.process, timeout)
            if self.uri is None:
                raise LocalDBError(f"the embedded database did not start (see {self.log_path})")
            self.port = int(self.uri.rsplit(":", 1)[1].strip("/"))
            wait_for_ping(self.uri, self.process, timeout)
            if self.engine == "postgresql" and sqlite_files(self.data_dir):
                migrate_sqlite(binary, self.data_dir, self.uri, timeout)
            self._record_storage()
        except (LocalDBError, PostgresError, OSError, pymongo.errors.PyMongoError) as e:
            self.stop()
            if isinstance(e, LocalDBError):
                raise
            raise LocalDBError(f"the embedded database did not start: {e}") from e
        except BaseException:
            self.stop()
            raise
        return self.uri

    @property
    def postgres_url(self):
        """The PostgreSQL database FerretDB uses (a Unix socket URL), for the write lock; None on SQLite."""
        return self.postgres.url if self.postgres is not None else None

    @property
    def sqlite_dir(self):
        """The directory of FerretDB's SQLite files; None on PostgreSQL."""
        return self.data_dir if self.engine == "sqlite" else None

    def settings(self):
        """Return the server settings that point at this database and its storage (for create_app overrides)."""
        found = {"MONGO_URI": self.uri}
        if self.postgres_url:
            found["POSTGRES_URL"] = self.postgres_url
        if self.sqlite_dir:
            found["SQLITE_DIR"] = self.sqlite_dir
        return found

    def _record_storage(self):
        # The API on this host learns from it what FerretDB stores in, to key its write lock (and proves
        # it before use: core/storage.py), so no one has to type the socket's path.
        client = pymongo.MongoClient(self.uri, serverSelectionTimeoutMS=5000)
        try:
            record_launcher_storage(client, **({"postgres_url": self.postgres_url} if self.postgres_url
                                               else {"sqlite_dir": self.data_dir}))
        finally:
            client.close()

    def _lock_data_dir(self):
        # Held while we serve: a second launcher on the same data fails at once, and a launcher
        # that died (even by SIGKILL) has released it, so whatever it left may be stopped.
        self._lock = open(os.path.join(self.data_dir, "localdb.lock"), "w")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock.close()
            self._lock = None
            raise LocalDBError(f"{self.data_dir} is in use by another embedded database launcher") from None

    def alive(self):
        """Return whether every process of the database still runs."""
        processes = [self.process] + ([self.postgres.process] if self.postgres else [])
        return all(p is not None and p.poll() is None for p in processes)

    def stop(self, timeout=10):
        """Stop the database (SIGTERM, then SIGKILL after `timeout` seconds), then its PostgreSQL."""
        if self.process is not None:
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
        if self.postgres is not None:
            self.postgres.stop(timeout)
            self.postgres = None
        self._unlock()

    def kill(self):
        """Kill the database at once (SIGKILL), as a crash would."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process.stdout.close()
            self.process = None
        if self.postgres is not None:
            self.postgres.kill()
            self.postgres = None
        self._unlock()

    def _unlock(self):
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()
