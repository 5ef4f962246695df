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

3. the counts kept beside the data (core/counts.py) are recounted when due, in a thread of their
   own while readers go on counting, by one process at a time (a database mutex): at the first
   tick if a counter is missing or not exact (a database from before them, or written around the
   API), and at the first tick after the database was away (a request answered 503, or a tick
   failed), whatever they say: a write cut off between its document and its counter left drift.

Every process does this side by side: each step is a conditional write, so a reservation ends
once, and granting passes take turns through their database mutex. `kick()` runs a pass at once,
after anything frees or adds machines, before that request answers.
"""

import datetime
import logging
import threading
import time

import pymongo.errors
from flask import current_app

from ..core import counts, ending, mutex, queue
from ..core.atomic import WritesRefused
from . import background
from .db import core

log = logging.getLogger(__name__)

DEFAULT_TICK = 1.0
DEFAULT_PASS = 5.0
IDLE_TICK = 1.0
KICK_WAIT = 2.0  # s a kick waits for another granter to finish, so that its pass sees what we freed
RECOUNT_STALE = datetime.timedelta(minutes=30)  # a recount's mutex left by a dead process


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
        self.recount_due = "start"  # why the next tick recounts: "start" (if a counter needs it), "outage" (always)
        self.counting = None  # the recount's thread, while it runs
        self.counts_settled = threading.Event()  # no recount due or running (tests wait on it)

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

    def database_failed(self):
        """Note that the database was away: a write may have lost its counter's $inc, so recount when it is back."""
        self.counts_settled.clear()
        self.recount_due = "outage"

    def run_once(self, here):
        """One tick: end what ran out, serve the line when it is due, recount when due; return whether anyone waits."""
        expired, _freed = ending.expire_due(here)
        due = queue.next_deadline(here)  # None: nobody waits
        clock = here.clock
        if due is not None and (expired or due <= here.now() or clock.monotonic() >= self.next_pass):
            self.next_pass = clock.monotonic() + self.every
            observe_grants(queue.serve(here), self.app)
        if self.recount_due and (self.counting is None or not self.counting.is_alive()):
            why, self.recount_due = self.recount_due, None
            self.counting = threading.Thread(target=self._recount, args=(here, why == "outage"), name="rm-recount",
                                             daemon=True)
            self.counting.start()
        self.ticks += 1
        return due is not None

    def _recount(self, here, always):
        if self.ensure_counts(here, always):
            if self.recount_due is None:
                self.counts_settled.set()
        elif self.recount_due is None:
            self.recount_due = "outage" if always else "start"  # the next tick tries again

    def ensure_counts(self, here, always=False):
        """Recount (`always`, or if a kept counter is missing, not exact or short); return whether it is done.

        One process at a time (a database mutex): when another holds it, a recount at start is left
        to it (done), one after an outage is tried again (not done: the other may predate the outage).
        """
        try:
            if not always and not counts.needs_recount(here.db):
                return True
            if not mutex.try_take(here, "recount", RECOUNT_STALE):
                return not always
            try:
                log.info("counts: recounting machines and pools (%s)",
                         "after the database was away" if always else "kept counters missing or not exact")
                done = counts.recount(here.db) is not None
            finally:
                mutex.give_back(here, "recount")
            return done
        except pymongo.errors.InvalidOperation:
            return True  # the app's client was closed: nothing left to do
        except WritesRefused:
            return True  # this server writes nothing (atomic.py): none of its writes can have drifted
        except pymongo.errors.PyMongoError as e:
            log.warning("counts: recount failed (readers count meanwhile; the sweep recounts): %s", e)
            return False

    def _tick_failed(self, error):
        if not isinstance(error, WritesRefused):
            self.database_failed()
        time.sleep(IDLE_TICK)

    def _run(self):
        try:
            here = None
            while not self.stopping.wait(self.tick):
                with background.one_pass("upkeep: tick", log, self._tick_failed):
                    if here is None:  # here, not before the loop: the database may be down at first
                        with self.app.app_context():
                            here = core(self.app)
                    self.run_once(here)
        except background.AppGone:
            pass
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
