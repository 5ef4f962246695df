"""The service's upkeep in each server process: leases and heartbeats end, waits time out, the line is served.

One background thread per app (`Upkeep`), started when the server starts serving (gunicorn's
`post_worker_init`, server.py, the tests' LiveServer) or, failing that, with the first request.
It never idles out, so on a quiet server a lease, a heartbeat window or a wait still ends on time;
it stops when the app's database client is closed or `stop()` is called. Each tick (every
QUEUE_TICK_SECONDS, 1 s):

1. reservations whose lease or heartbeat window ran out are ended, `expired` (ending.expire_due;
   the history says which ran out): a killed CI job's machines come back within its heartbeat
   period plus a tick;
2. if anyone waits, a granting pass (queue.serve) when step 1 freed machines (they go to the line
   before anyone else can take them), when a wait has run out, or QUEUE_PASS_SECONDS (5 s) after
   the last one (aging may have reordered the line). A pass reads every machine the line matches,
   so it is not run on every tick; machines freed or added by a request get a pass at once (`kick`).

Every process does this side by side: each step is a conditional write, so a reservation ends
once, and granting passes take turns through their database mutex. `kick()` runs a pass at once,
after anything frees or adds machines, before that request answers.
"""

import logging
import threading
import time

import pymongo.errors
from flask import current_app

from ..core import ending, queue
from .db import core

log = logging.getLogger(__name__)

DEFAULT_TICK = 1.0
DEFAULT_PASS = 5.0
IDLE_TICK = 1.0
KICK_WAIT = 2.0  # s a kick waits for another granter to finish, so that its pass sees what we freed


class Upkeep:
    """The upkeep ticker and the queue's triggers of one app in one process."""

    def __init__(self, app):
        self.app = app
        self.tick = float(app.config.get("QUEUE_TICK_SECONDS", DEFAULT_TICK))
        self.every = float(app.config.get("QUEUE_PASS_SECONDS", DEFAULT_PASS))
        self.next_pass = 0.0
        self.thread = None
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.ticks = 0  # passes run, for tests that wait for one (no sleeping on a guess)

    def start(self):
        """Start the ticker if it is not running (idempotent, thread-safe)."""
        if self.tick <= 0 or self.thread is not None:
            return
        with self.lock:
            if self.thread is None and not self.stopping.is_set():
                self.thread = threading.Thread(target=self._run, name="rm-upkeep", daemon=True)
                self.thread.start()

    def stop(self, timeout=5.0):
        """Stop the ticker and wait for it to end."""
        self.stopping.set()
        thread = self.thread
        if thread is not None:
            thread.join(timeout)

    def kick(self, here):
        """Run a granting pass now, if anyone waits; never fail the request that triggered it."""
        try:
            if queue.anyone_waiting(here):
                observe_grants(queue.serve(here, wait=KICK_WAIT), self.app)
        except pymongo.errors.PyMongoError as e:
            log.warning("queue: granting pass failed: %s", e)

    def run_once(self, here):
        """One tick: end what ran out, then serve the line when it is due; return whether anyone waits."""
        expired, _freed = ending.expire_due(here)
        due = queue.next_deadline(here)  # None: nobody waits
        clock = here.clock
        if due is not None and (expired or due <= here.now() or clock.monotonic() >= self.next_pass):
            self.next_pass = clock.monotonic() + self.every
            observe_grants(queue.serve(here), self.app)
        self.ticks += 1
        return due is not None

    def _run(self):
        try:
            here = None
            while not self.stopping.wait(self.tick):
                try:
                    if here is None:  # here, not before the loop: the database may be down at first
                        with self.app.app_context():
                            here = core(self.app)
                    self.run_once(here)
                except pymongo.errors.InvalidOperation:
                    return  # the app's client was closed: the app is gone
                except pymongo.errors.PyMongoError as e:
                    log.warning("upkeep: tick failed: %s", e)
                    time.sleep(IDLE_TICK)
                except Exception:
                    log.exception("upkeep: tick failed")
        finally:
            with self.lock:
                self.thread = None


def observe_grants(served, app=None):
    """Count the waits of the requests a granting pass granted (rm_queue_wait_seconds)."""
    if served and served.get("waited"):
        (app or current_app).extensions["rm_metrics"].waited(served["waited"])


def upkeep(app=None):
    """Return the app's Upkeep."""
    return (app or current_app).extensions["rm_upkeep"]


def kick():
    """Run a granting pass for the current app now (after freeing or adding machines)."""
    upkeep().kick(core())


def init_app(app):
    """Give the app its Upkeep; its ticker starts with the server (or the first request)."""
    app.extensions["rm_upkeep"] = Upkeep(app)
    app.before_request(lambda: upkeep(app).start())
