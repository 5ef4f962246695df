"""The background worker of one server process: webhook deliveries, and the events' retention.

Started with the first request (after gunicorn forks), like the queue's ticker; every process runs
one and the database coordinates them (core/webhooks.py): each tick fans new events out into
deliveries, puts back deliveries whose holder died, and claims due ones, each sent from a thread
of its own (at most WEBHOOK_THREADS at once), never from a request: a slow or dead receiver holds
one of those threads for WEBHOOK_TIMEOUT at most, and no request at all. Every PRUNE_EVERY seconds
one process (a mutex in the database) drops events older than EVENTS_RETENTION_SECONDS and
finished deliveries older than a week. The worker stops when the app's database client is closed.
"""

import datetime
import logging
import os
import socket
import threading
import time

import pymongo.errors
from flask import current_app

from ..core import events, mutex, webhooks
from ..core.clock import utcnow
from . import background, egress
from .config import SettingsError
from .db import database
from .eventfeed import jsonable

log = logging.getLogger(__name__)

TICK = 0.25  # s between ticks while deliveries are under way or due
IDLE_TICK = 1.0
PRUNE_EVERY = 600.0
PRUNE_MUTEX = "events-retention"


class Worker:
    """The delivery worker of one app in one process."""

    def __init__(self, app):
        config = app.config
        self.app = app
        try:
            self.allow = egress.AllowList(config.get("WEBHOOK_ALLOW") or "public")
        except ValueError as e:
            raise SettingsError(str(e)) from None
        self.policy = webhooks.Policy(config.get("WEBHOOK_RETRY_SECONDS", 10),
                                      config.get("WEBHOOK_RETRY_MAX_SECONDS", 3600),
                                      config.get("WEBHOOK_MAX_ATTEMPTS", 12))
        self.timeout = float(config.get("WEBHOOK_TIMEOUT", 10))
        self.policy.lease = 2 * self.timeout + 30
        self.threads = max(1, int(config.get("WEBHOOK_THREADS", 4)))
        self.retention = int(config.get("EVENTS_RETENTION_SECONDS", 86400))
        self.date_format = config["DATE_FORMAT"]
        self.thread = None
        self.lock = threading.Lock()
        self.in_flight = 0
        self.last_prune = 0.0
        self.stopped = threading.Event()

    def touch(self):
        """Start the worker if it is not running."""
        if self.thread is not None or self.stopped.is_set():
            return
        with self.lock:
            if self.thread is None:
                self.thread = threading.Thread(target=self._run, name="rm-hook-worker", daemon=True)
                self.thread.start()

    def render(self, doc):
        """Return (type, data) of an event document, as receivers get it."""
        return events.event_type(doc), jsonable(events.event_data(doc), self.date_format)

    def _run(self):
        db = None
        try:
            while not self.stopped.is_set():
                busy = False
                with background.one_pass("webhooks: worker pass", log):
                    if db is None:  # here, not before the loop: the database may be down at first
                        with self.app.app_context():
                            db = database(self.app)
                    busy = self.tick(db)
                self.stopped.wait(TICK if busy else IDLE_TICK)
        except background.AppGone:
            pass
        finally:
            with self.lock:
                self.thread = None

    def tick(self, db):
        """One pass: fan out, reclaim, claim and send; prune now and then. Return whether there is more to do."""
        now = utcnow()
        if time.monotonic() - self.last_prune > PRUNE_EVERY:
            self.last_prune = time.monotonic()
            self.prune(db, now)
        if db[webhooks.HOOKS].find_one({}, {"_id": 1}) is None:
            return False
        read = webhooks.fan_out(db, self.render, now)
        webhooks.reclaim(db, now)
        with self.lock:
            free = self.threads - self.in_flight
        for delivery in webhooks.due(db, now, free):
            token = webhooks.claim(db, delivery, now, self.policy, f"{socket.gethostname()}:{os.getpid()}")
            if token is None:
                continue  # another process took it
            with self.lock:
                self.in_flight += 1
            threading.Thread(target=self._deliver, args=(db, delivery, token), name="rm-hook-delivery",
                             daemon=True).start()
        with self.lock:
            return bool(read) or self.in_flight > 0

    def _deliver(self, db, delivery, token):
        try:
            hook = webhooks.get(db, delivery["hook"])
            if hook is None:
                webhooks.unknown_hook(db, delivery)
                return
            headers = {"X-RM-Event": delivery["type"], "X-RM-Event-Id": str(delivery["event"]),
                       "X-RM-Delivery": delivery["_id"]}
            outcome = egress.post(self.allow, hook["url"], delivery["body"], hook["secret"], headers, self.timeout)
            state = webhooks.finish(db, delivery, token, outcome, utcnow(), self.policy)
            if state == "failed":
                log.warning("webhooks: delivery %s to %s failed for good after %d attempts: %s", delivery["_id"],
                            hook["url"], delivery["attempts"] + 1, outcome["error"])
        except pymongo.errors.InvalidOperation:
            pass  # the app is gone; the lease runs out and another process sends it
        except Exception:
            log.exception("webhooks: delivery %s failed", delivery["_id"])
        finally:
            with self.lock:
                self.in_flight -= 1

    def prune(self, db, now):
        """Drop events past retention and old finished deliveries (one process at a time)."""
        here = self.app.extensions["rm_core"].with_db(db)
        if not mutex.try_take(here, PRUNE_MUTEX, datetime.timedelta(seconds=PRUNE_EVERY)):
            return
        try:
            dropped = events.prune(db, now, self.retention)
            finished = webhooks.prune(db, now)
            if dropped or finished:
                log.info("retention: dropped %d events, %d finished webhook deliveries", dropped, finished)
        finally:
            mutex.give_back(here, PRUNE_MUTEX)


def worker(app=None):
    """Return the app's webhook Worker."""
    return (app or current_app).extensions["rm_hook_worker"]


def init_app(app):
    """Give the app its worker; it starts with the first request."""
    app.extensions["rm_hook_worker"] = Worker(app)
    app.before_request(lambda: worker(app).touch())
