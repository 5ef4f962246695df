"""Several API server processes (gunicorn) sharing one database, for the concurrency proofs.

Each server is a simulated host of its own: its own lock directory (RM_WRITE_LOCK_DIR), so a
host-wide lock would not serialise it with the others, and the write lock's PostgreSQL given as a
deployment gives it (RM_POSTGRES_URL), not learnt from the embedded launcher's record.
"""

import contextlib
import os
import random

import pymongo
import pytest

from .deployed import Gunicorn

COLLECTIONS = ("machines", "reservations", "reservation_ends", "machine_claims", "address_claims",
               "address_pools", "allocations", "public_addresses", "private_addresses", "history", "locks",
               "events", "event_marks", "webhooks", "webhook_deliveries")


def host_env(localdb):
    """Return the environment a host of a deployment on `localdb`'s storage gets (RM_POSTGRES_URL, ...)."""
    return {f"RM_{key}": value for key, value in localdb.settings().items() if key != "MONGO_URI"}


class Cluster:
    """`n` gunicorn servers (one worker of 8 threads each) over the database `dbname` at `uri`, as `n` hosts."""

    def __init__(self, uri, dbname, users_file, log_dir, n=2, env=None):
        self.servers = []
        try:
            for i in range(n):
                host_dir = os.path.join(log_dir, f"host{i}")
                os.makedirs(host_dir, exist_ok=True)
                # One at a time: the first creates the unique indexes before others serve.
                server = Gunicorn(uri, dbname, users_file, os.path.join(log_dir, f"server{i}.log"),
                                  workers=1, threads=8, env=dict({"RM_WRITE_LOCK_DIR": host_dir}, **(env or {})))
                self.servers.append(server)
                server.start()
        except Exception:
            self.stop()
            raise

    @property
    def urls(self):
        return [s.url for s in self.servers]

    def stop(self):
        for server in self.servers:
            server.stop()


@contextlib.contextmanager
def running_cluster(localdb, users_file, log_dir, prefix, env=None):
    """Give (Cluster, Database): two gunicorn servers over one fresh database, dropped afterwards."""
    dbname = f"test_{prefix}_{random.randrange(1 << 32):08x}"
    cluster = Cluster(localdb.uri, dbname, users_file, log_dir, env=dict(host_env(localdb), **(env or {})))
    client = pymongo.MongoClient(localdb.uri, tz_aware=True)
    try:
        yield cluster, client[dbname]
    finally:
        cluster.stop()
        client.drop_database(dbname)
        client.close()


def emptied(shared):
    """Return `shared` with every collection emptied (indexes kept)."""
    _cluster, db = shared
    for name in COLLECTIONS:
        db[name].delete_many({})
    return shared


def cluster_fixtures(prefix, env=None):
    """Return the fixtures (shared, cluster) of a module whose tests run on two gunicorn servers.

    `shared`: the servers over one database, for the whole module; `cluster`: the same, over
    emptied collections (indexes kept). In the module: `shared, cluster = cluster_fixtures("name")`.
    `env`: the servers' environment beyond the defaults (settings, RM_<KEY>).
    """

    @pytest.fixture(scope="module")
    def shared(localdb, users_file, tmp_path_factory):
        with running_cluster(localdb, users_file, str(tmp_path_factory.mktemp(prefix)), prefix, env) as pair:
            yield pair

    @pytest.fixture
    def cluster(shared):
        return emptied(shared)

    return shared, cluster
