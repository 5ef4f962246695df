"""Where a FerretDB keeps our database, proven, so that the write lock is keyed by what it protects.

FerretDB does not say what it stores its data in. We are told (RM_POSTGRES_URL or RM_SQLITE_DIR; for
the embedded database, the launcher's own record, see `launcher_record`), and we check what we are
told: a marker document is inserted through FerretDB, then looked for in the storage directly, then
deleted. Found, the storage is the one FerretDB writes to, and its identity keys the lock:

- PostgreSQL: the cluster's system identifier (`pg_control_system()`, shared by a primary and its
  streaming replicas, so a failover keeps the key), the database's name, and the schema FerretDB
  keeps our database in. Never a host name or a URI: two spellings of one server are one lock.
- SQLite: the database file's resolved path (one host by nature).

Raises StorageUnproven (permanent until the configuration changes; the message names the fix), or
psycopg.OperationalError / sqlite3.OperationalError when the storage cannot be reached now.
"""

import contextlib
import dataclasses
import datetime
import hashlib
import os
import socket
import sqlite3
import urllib.parse
import uuid

import psycopg
import psycopg.conninfo
import psycopg.errors
from psycopg import sql

PROBES = "write_lock_probes"  # the collection the markers are written to, and deleted from at once
# The embedded launcher's record of its storage: database, collection, and the one document's _id.
LAUNCHER_DB, LAUNCHER_COLLECTION, LAUNCHER_ID = "rm_localdb_info", "storage", "storage"
FERRETDB_PG_METADATA = "_ferretdb_database_metadata"  # FerretDB v1: schema <db>, collection -> table
FERRETDB_SQLITE_METADATA = "_ferretdb_collections"    # FerretDB v1: <dir>/<db>.sqlite, name -> table_name
CONNECT_TIMEOUT = 5


class StorageUnproven(Exception):
    """What we were told about FerretDB's storage is missing or wrong; the message says how to fix it."""


class StorageNotRecorded(StorageUnproven):
    """Nothing says where FerretDB stores its data (no setting, no launcher record) yet: the embedded
    launcher may still be about to write its record, so the question is asked again at the next write."""


@dataclasses.dataclass(frozen=True)
class Storage:
    """A proven storage: `kind` postgresql or sqlite, `identity` in words, `key` (hex) derived from it."""

    kind: str
    identity: str
    key: str
    postgres_url: str = None
    path: str = None  # SQLite: the database file, resolved

    def advisory_key(self):
        """Return the key as PostgreSQL's advisory lock takes it: a signed 64-bit integer."""
        return int.from_bytes(bytes.fromhex(self.key)[:8], "big", signed=True)


def _key(*parts):
    return hashlib.sha256("\0".join(str(p) for p in parts).encode()).hexdigest()


@contextlib.contextmanager
def _marker(db):
    """Insert a marker document through FerretDB for the block; yield its _id."""
    nonce = f"probe-{uuid.uuid4().hex}"
    db[PROBES].insert_one({"_id": nonce, "at": datetime.datetime.now(datetime.timezone.utc)})
    try:
        yield nonce
    finally:
        db[PROBES].delete_one({"_id": nonce})


# Over TCP, a PostgreSQL server that vanished is noticed by its silence (the URL's own values win).
CLIENT_KEEPALIVES = {"keepalives": "1", "keepalives_idle": "10", "keepalives_interval": "5",
                     "keepalives_count": "3", "tcp_user_timeout": "25000", "connect_timeout": str(CONNECT_TIMEOUT)}


def connect_postgres(url):
    """Return a new autocommit connection to `url` (raises psycopg.OperationalError, ProgrammingError).

    Its application_name says which process on which host it is, for `pg_stat_activity`.
    """
    params = dict(CLIENT_KEEPALIVES, **psycopg.conninfo.conninfo_to_dict(url))
    params["application_name"] = f"rm-write-lock pid {os.getpid()} on {socket.gethostname()}"[:63]
    return psycopg.connect(psycopg.conninfo.make_conninfo(**params), autocommit=True)


def postgresql(db, url, origin="RM_POSTGRES_URL"):
    """Prove that FerretDB keeps `db` in the PostgreSQL database at `url`; return its Storage."""
    try:
        conn = connect_postgres(url)
    except psycopg.ProgrammingError as e:
        raise StorageUnproven(f"{origin} is not a PostgreSQL connection string: {str(e).strip()}") from e
    with conn:
        if conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]:
            raise StorageUnproven(f"{origin} leads to a standby (read-only) PostgreSQL; point it at the primary "
                                  "that FerretDB writes to")
        system, database = conn.execute("SELECT system_identifier, current_database() FROM pg_control_system()"
                                        ).fetchone()
        where = f"PostgreSQL system {system}, database {database}"
        with _marker(db) as nonce:
            try:
                row = conn.execute(sql.SQL("SELECT _jsonb->>'table' FROM {} WHERE _jsonb->>'_id' = %s").format(
                    sql.Identifier(db.name, FERRETDB_PG_METADATA)), (PROBES,)).fetchone()
                found = row is not None and conn.execute(
                    sql.SQL("SELECT 1 FROM {} WHERE _jsonb->>'_id' = %s").format(sql.Identifier(db.name, row[0])),
                    (nonce,)).fetchone() is not None
            except psycopg.errors.UndefinedTable:
                found = False
            except psycopg.errors.InsufficientPrivilege as e:
                raise StorageUnproven(f"the role of {origin} may not read FerretDB's tables in {where} ({e}); "
                                      "connect as the role FerretDB uses") from e
        if not found:
            raise StorageUnproven(f"{origin} leads to {where}, which does not hold the data FerretDB serves as "
                                  f"database {db.name!r}: point it at the PostgreSQL database FerretDB uses")
        return Storage("postgresql", f"{where}, schema {db.name}", _key("postgresql", system, database, db.name),
                       postgres_url=url)


def sqlite(db, directory, origin="RM_SQLITE_DIR"):
    """Prove that FerretDB keeps `db` in `directory`/<name>.sqlite; return its Storage."""
    path = os.path.realpath(os.path.join(directory, f"{db.name}.sqlite"))
    with _marker(db) as nonce:
        if not os.path.isfile(path):
            raise StorageUnproven(f"{origin}: {path} does not exist; point it at the directory of FerretDB's "
                                  "SQLite files")
        with contextlib.closing(sqlite3.connect(f"file:{urllib.parse.quote(path)}?mode=ro", uri=True,
                                                timeout=CONNECT_TIMEOUT)) as conn:
            row = conn.execute(f'SELECT table_name FROM "{FERRETDB_SQLITE_METADATA}" WHERE name = ?',
                               (PROBES,)).fetchone()
            found = row is not None and conn.execute(
                'SELECT 1 FROM "{}" WHERE _ferretdb_sjson LIKE ?'.format(row[0].replace('"', '""')),
                (f'%"{nonce}"%',)).fetchone() is not None
    if not found:
        raise StorageUnproven(f"{origin}: {path} does not hold the data FerretDB serves as database {db.name!r}")
    return Storage("sqlite", f"SQLite file {path}", _key("sqlite", path), path=path)


def launcher_record(client):
    """Return what the embedded database's launcher recorded about its storage, or None.

    Only a PostgreSQL reached through a Unix socket (the embedded one has no TCP at all) or a local
    directory is taken from it: a record is a hint about this host, proven before use like any setting.
    """
    record = client[LAUNCHER_DB][LAUNCHER_COLLECTION].find_one({"_id": LAUNCHER_ID})
    if not record:
        return None
    if record.get("engine") == "postgresql" and isinstance(record.get("postgres_url"), str):
        try:
            host = psycopg.conninfo.conninfo_to_dict(record["postgres_url"]).get("host") or ""
        except psycopg.ProgrammingError:
            return None
        return {"postgres_url": record["postgres_url"]} if host.startswith("/") else None
    if record.get("engine") == "sqlite" and isinstance(record.get("sqlite_dir"), str):
        return {"sqlite_dir": record["sqlite_dir"]} if os.path.isabs(record["sqlite_dir"]) else None
    return None


def record_launcher_storage(client, **fields):
    """Record the embedded database's storage (postgres_url=..., or sqlite_dir=...) for the API to find."""
    engine = "postgresql" if "postgres_url" in fields else "sqlite"
    client[LAUNCHER_DB][LAUNCHER_COLLECTION].replace_one(
        {"_id": LAUNCHER_ID}, dict(fields, engine=engine, at=datetime.datetime.now(datetime.timezone.utc)),
        upsert=True)
