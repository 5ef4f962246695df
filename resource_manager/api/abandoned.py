"""A request that fails leaves nothing pending: its half-made reservation or allocation is undone at once.

A reservation (or an address allocation) begins with the insert of a `pending` document whose `_id`
derives from the Idempotency-Key (core/pending.py). A request that fails on
the way undoes its own work, except when the database fails under it (a PostgreSQL backend killed,
a restart): then the undo fails as well, and the document stayed `pending` until the sweep repaired
it after its grace period (2 minutes). Meanwhile every retry with the same key waited for it and
answered 503, so a client riding out a one-second blip failed all the same.

So the database a request is given (db.database()) notes the pending documents the request itself
inserted. When the request is answered with a 5xx, those still pending are undone as the sweep would
(taken over first, so nothing still working on them can complete them afterwards), by a background
thread that tries again while the database is away, for up to half the grace period. Only documents
this request inserted: a retry that found another request's document never touches it. A document a
granter is granting from the queue (`granting_at`) is the granter's. A process that dies first
leaves the repair to the sweep, as before.
"""

import logging
import queue
import threading
import time

import pymongo.errors
from flask import current_app, g, has_request_context

from ..core import addresses, pending, reserving
from ..core.store import ALLOCATIONS, RESERVATIONS

log = logging.getLogger(__name__)

RETRY_EVERY = 0.5  # s between tries while the database is away
UNDO = {RESERVATIONS: reserving.roll_back, ALLOCATIONS: addresses.undo}


def watch(db):
    """Return `db` as the current request should use it: its inserts of pending requests are noted."""
    return _WatchedDatabase(db) if has_request_context() else db


class _WatchedDatabase:
    """A database (atomic.AtomicDatabase) whose reservations and allocations collections note pending inserts."""

    __slots__ = ("_db",)

    def __init__(self, db):
        self._db = db

    def __getitem__(self, name):
        collection = self._db[name]
        return _WatchedCollection(collection, name) if name in UNDO else collection

    def __getattr__(self, name):
        return self[name] if name in UNDO else getattr(self._db, name)


class _WatchedCollection:
    __slots__ = ("_collection", "_name")

    def __init__(self, collection, name):
        self._collection = collection
        self._name = name

    def __getattr__(self, name):
        return getattr(self._collection, name)

    def insert_one(self, document, *args, **kwargs):
        try:
            result = self._collection.insert_one(document, *args, **kwargs)
        except pymongo.errors.DuplicateKeyError:
            raise  # another request's: never ours to undo
        except pymongo.errors.PyMongoError:
            _note(self._name, document)  # it may have landed before the connection broke
            raise
        _note(self._name, document)
        return result


def _note(collection, document):
    if document.get("state") == "pending" and "_id" in document:
        g.setdefault("rm_pending_made", []).append((collection, document["_id"]))


class Undoer:
    """Undoes, in a thread of its own, what failed requests of this process left pending."""

    def __init__(self, app, core_of):
        self.app = app
        self.core_of = core_of
        self.patience = app.extensions["rm_core"].policy.grace_seconds / 2  # then the sweep's turn comes soon
        self.work = queue.Queue()
        self.thread = None
        self.lock = threading.Lock()

    def later(self, made):
        """Undo each (collection, _id) of `made` that is still pending, as soon as the database answers."""
        deadline = time.monotonic() + self.patience
        for collection, _id in made:
            self.work.put((collection, _id, deadline))
        with self.lock:
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self._run, name="rm-undo-abandoned", daemon=True)
                self.thread.start()

    def _run(self):
        while True:
            try:
                collection, _id, deadline = self.work.get(timeout=60)
            except queue.Empty:
                with self.lock:
                    if self.work.empty():
                        self.thread = None
                        return
                continue
            self._undo_until(collection, _id, deadline)

    def _undo_until(self, collection, _id, deadline):
        while True:
            try:
                with self.app.app_context():
                    if undo_pending(self.core_of(self.app), collection, _id):
                        log.warning("undid %s %s, left pending by a request that failed", collection[:-1], _id)
                return
            except pymongo.errors.PyMongoError as e:
                if time.monotonic() >= deadline:
                    log.warning("could not undo %s %s left pending by a failed request (%s); the sweep will",
                                collection[:-1], _id, e)
                    return
            except Exception:  # a bug must not stop the thread that undoes the others
                log.exception("undoing %s %s failed", collection[:-1], _id)
                return
            time.sleep(RETRY_EVERY)


def undo_pending(core, collection, _id):
    """Undo the pending request `_id` of `collection` (as the sweep does); return whether there was one.

    Raises PyMongoError while the database does not answer.
    """
    doc = core.db[collection].find_one({"_id": _id, "state": "pending"})
    if doc is None or doc.get("granting_at") is not None:
        return False
    if not (doc.get("ending") or pending.take_over(core, collection, _id)):
        return False
    UNDO[collection](core, doc)
    return True


def _after(response):
    made = g.pop("rm_pending_made", None)
    if made and response.status_code >= 500:
        current_app.extensions["rm_undoer"].later(made)
    return response


def init_app(app, core_of):
    """Undo what requests answered 5xx left pending; `core_of(app)` gives the Core to do it with."""
    app.extensions["rm_undoer"] = Undoer(app, core_of)
    app.after_request(_after)
