"""Granting passes of the reservation queue in a server process (the queue itself: core/queue.py).

A pass runs right after anything that frees or adds machines here (a release, a cancel, a
machine made idle: `kick`), and from a background ticker thread, started with the first request
(so after gunicorn forks), every QUEUE_TICK_SECONDS while requests are queued (every second
otherwise, to notice them): waits run out, leases that expired unnoticed are reclaimed for
waiters, and machines freed by another process are handed out even if its own pass was
skipped. The database is the only coordinator: one granter at a time holds its mutex.
The ticker stops after IDLE_STOP seconds without a request (the next request starts it again)
and when the app's database client is closed.
"""

import logging
import threading
import time

import pymongo.errors
from flask import current_app

from ..core import queue, sweep
from .db import database

log = logging.getLogger(__name__)

DEFAULT_TICK = 0.25
IDLE_TICK = 1.0
IDLE_STOP = 120.0  # longer than the longest long-poll, so waiting clients keep it alive
KICK_WAIT = 2.0  # s a kick waits for another granter to finish, so that its pass sees what we freed


class Granter:
    """The queue's triggers and background ticker of one app in one process."""

    def __init__(self, app):
        self.app = app
        self.tick = float(app.config.get("QUEUE_TICK_SECONDS", DEFAULT_TICK))
        self.last_request = time.monotonic()
        self.thread = None
        self.lock = threading.Lock()

    def touch(self):
        """Note a request; start the ticker if it is not running."""
        self.last_request = time.monotonic()
        if self.tick <= 0 or self.thread is not None:
            return
        with self.lock:
            if self.thread is None:
                self.thread = threading.Thread(target=self._run, name="rm-queue-ticker", daemon=True)
                self.thread.start()

    def kick(self, db):
        """Run a granting pass now, if anyone waits; never fail the request that triggered it."""
        try:
            if queue.anyone_waiting(db):
                queue.serve(db, sweep.grace_seconds(self.app), wait=KICK_WAIT)
        except pymongo.errors.PyMongoError as e:
            log.warning("queue: granting pass failed: %s", e)

    def _run(self):
        try:
            with self.app.app_context():
                db = database(self.app)
            grace = sweep.grace_seconds(self.app)
            busy = False
            while time.monotonic() - self.last_request < IDLE_STOP:
                time.sleep(self.tick if busy else IDLE_TICK)
                try:
                    busy = queue.anyone_waiting(db)
                    if busy:
                        queue.serve(db, grace)
                except pymongo.errors.InvalidOperation:
                    return  # the app's client was closed: the app is gone
                except pymongo.errors.PyMongoError as e:
                    log.warning("queue: ticker pass failed: %s", e)
                except Exception:
                    log.exception("queue: ticker pass failed")
        finally:
            with self.lock:
                self.thread = None


def granter(app=None):
    """Return the app's Granter."""
    return (app or current_app).extensions["rm_queue"]


def kick():
    """Run a granting pass for the current app now (after freeing or adding machines)."""
    granter().kick(database())


def init_app(app):
    """Give the app its Granter; start its ticker with the first request."""
    app.extensions["rm_queue"] = Granter(app)
    app.before_request(lambda: granter(app).touch())
