"""The database behind the API: its engine, unique indexes, and whether it answers."""

import logging
import threading

import pymongo
import pymongo.errors
from flask import current_app, request

from ..core import atomic
from ..core.candidates import CandidatePasses
from ..core.clock import SYSTEM
from ..core.context import Core
from ..schema import NAME_FIELDS
from . import abandoned
from .config import policy
from .errors import error_response, note_database_error

log = logging.getLogger(__name__)
WRITES = ("POST", "PUT", "PATCH", "DELETE")


def database(app=None):
    """Return the Database the app serves, its conditional writes atomic on this engine (see atomic.py).

    Inside a request, the pending reservations and allocations it inserts are noted (abandoned.py).
    Raises PyMongoError when the engine is not known yet and the database does not answer.
    """
    app = app or current_app
    return abandoned.watch(engine(app).wrap(app.data.driver.db))


def core(app=None):
    """Return the lifecycles' context (core/context.py): the atomic database, the app's clock, policy and caches.

    Raises PyMongoError when the engine is not known yet and the database does not answer.
    """
    app = app or current_app
    return app.extensions["rm_core"].with_db(database(app))


def engine(app=None):
    """Return the app's atomic.Engine, asking the database what it is on first use."""
    return (app or current_app).extensions["rm_engine"].get()


class EngineProbe:
    """Detects the engine once per process (at start, or when the database first answers)."""

    def __init__(self, app):
        self.app = app
        self.engine = None
        self._lock = threading.Lock()

    def get(self):
        if self.engine is None:
            with self._lock:
                if self.engine is None:
                    with self.app.app_context():
                        self.engine = atomic.detect(self.app.data.driver.db,
                                                    atomic.WriteSettings.from_config(self.app.config))
        return self.engine

    def close(self):
        """Close the engine's lock connection, if any (the app is done: tests, commands)."""
        if self.engine is not None:
            self.engine.close()


def collection_name(app, resource):
    """Return the MongoDB collection behind an Eve resource."""
    return app.config["DOMAIN"][resource]["datasource"]["source"]


class Indexes:
    """Creates the unique indexes once the database answers; until then, writes wait."""

    def __init__(self, app):
        self.app = app
        self.ready = False
        self._lock = threading.Lock()
        # (collection, keys, options): what exclusivity rests on, created at start.
        self.specs = [
            (collection_name(app, resource), [(field, pymongo.ASCENDING)], {"unique": True, "name": f"{field}_unique"})
            for resource, field in NAME_FIELDS.items()
        ]

    def add(self, collection, keys, **options):
        """Require one more index (for modules that own collections of their own)."""
        self.specs.append((collection, keys, options))
        self.ready = False

    def ensure(self):
        """Create every index; return whether they all exist."""
        if self.ready:
            return True
        with self._lock:
            if self.ready:
                return True
            with self.app.app_context():
                db = self.app.data.driver.db
                for coll, keys, options in self.specs:
                    db[coll].create_index(keys, **options)
            self.ready = True
            log.info("database indexes ensured")
        return True


def ping():
    """Return whether the app's database answers a ping."""
    try:
        current_app.data.driver.db.client.admin.command("ping")
        return True
    except pymongo.errors.PyMongoError:
        return False


def _ensure_before_write():
    indexes = current_app.extensions["rm_indexes"]
    if request.endpoint in ("health.healthz", "metrics"):  # they say the database is down
        return None
    if not indexes.ready:
        try:
            engine()
            indexes.ensure()
        except pymongo.errors.PyMongoError as e:
            log.warning("cannot create indexes yet: %s", e)
            note_database_error("unavailable")
            return error_response(503, "database unavailable, try again shortly", headers={"Retry-After": "5"})
    if request.method in WRITES:
        return _refused()
    return None


def _refused():
    """Answer 503 to a write this set-up cannot serialise (atomic.py), before anything is written."""
    found = engine()
    refusal = found.refusal
    if refusal is None:
        return None
    note_database_error("unavailable")
    if found.lock.kind == "pending":
        return error_response(503, "the write lock's database does not answer, try again shortly",
                              headers={"Retry-After": "5"})
    return error_response(503, "writes are refused: this server cannot serialise writes on its database (FerretDB "
                          "without a write lock that every writer sees); the server's log names the fix",
                          headers={"Retry-After": "60"})


def init_app(app, clock=None):
    """Learn the engine and create the unique indexes now if the database answers, else on first use.

    `clock`: the lifecycles' clock (core/clock.py; default the real one), for tests that move time.
    """
    clock = clock or SYSTEM
    app.extensions["rm_core"] = Core(None, clock, policy(app.config), CandidatePasses(clock))
    probe = EngineProbe(app)
    app.extensions["rm_engine"] = probe
    indexes = Indexes(app)
    app.extensions["rm_indexes"] = indexes
    app.before_request(_ensure_before_write)
    abandoned.init_app(app, core)
    try:
        probe.get()
        indexes.ensure()
    except pymongo.errors.PyMongoError as e:
        log.warning("database not reachable at start (%s); will retry on each request", e)
