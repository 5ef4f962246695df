"""The event feed of one server process: one reader of the events collection for all its streams.

A background thread, started by the first stream (after gunicorn forks), asks the database every
POLL seconds (0.1) whether the `top` mark moved (one lookup in a one-document collection) and, when it
did, reads the new events in order (core/events.read: contiguous, so none is ever skipped) into a
ring of the last RING events, each rendered once. Streams wait on the ring; a stream resuming
from before the ring reads the database itself until it catches up. The thread stops after
IDLE_STOP seconds without a stream, and when the app's database client is closed.
"""

import collections
import datetime
import json
import logging
import threading
import time

from bson import ObjectId

from ..core import events
from . import background
from .db import database

log = logging.getLogger(__name__)

POLL = 0.1  # s between looks at the top mark (one lookup in a one-document collection)
RING = 4096
IDLE_STOP = 60.0
HOLE_PATIENCE = 30.0  # s a hole may last before it is taken for an event deleted by hand (see events.py)
BATCH = 4 * events.PAGE

Event = collections.namedtuple("Event", "id type data")  # data: the JSON text


def render(doc, date_format):
    """Return the Event of a stored event document: its type, and its data as JSON text."""
    data = jsonable(events.event_data(doc), date_format)
    return Event(doc["_id"], events.event_type(doc), json.dumps(data, separators=(",", ":"), sort_keys=True))


def jsonable(value, date_format):
    """Return `value` as JSON takes it: dates in the API's format, ObjectIds as text."""
    if isinstance(value, dict):
        return {k: jsonable(v, date_format) for k, v in value.items()}
    if isinstance(value, list):
        return [jsonable(v, date_format) for v in value]
    if isinstance(value, datetime.datetime):
        return value.strftime(date_format)
    if isinstance(value, ObjectId):
        return str(value)
    return value


class Lost(Exception):
    """The events after a position were dropped by retention (or the position is unknown here)."""

    def __init__(self, position, oldest):
        super().__init__(f"events after {position} are no longer kept; the oldest kept is {oldest}")
        self.position, self.oldest = position, oldest


class Feed:
    """The ring of recent events of one app in one process, and the thread that fills it."""

    def __init__(self, app):
        self.app = app
        self.date_format = app.config["DATE_FORMAT"]
        self.cond = threading.Condition()
        self.ring = collections.deque(maxlen=RING)
        self.last = None  # the id the ring reaches (None: not started)
        self.thread = None
        self.readers = 0
        self.last_reader = time.monotonic()
        self._restart = False
        self._db = None
        self.epoch = None

    # -- for streams ------------------------------------------------------------------------

    def start_position(self):
        """Return where a stream without Last-Event-ID starts: after the newest event (the ring may lag).

        The ring is dropped first if the database's sequence started again meanwhile (its events were
        emptied): a stream must never be served the events of a sequence that is gone.
        """
        self._ensure_running()
        top, epoch = events.head(self.database())
        with self.cond:
            if self.last is not None and (epoch != self.epoch or top < self.last):
                self._forget()
        return top

    def attach(self):
        """Note a stream (it keeps the thread running); detach() when it ends."""
        with self.cond:
            self.readers += 1
            self.last_reader = time.monotonic()
        self._ensure_running()

    def detach(self):
        with self.cond:
            self.readers -= 1
            self.last_reader = time.monotonic()

    def check_resume(self, position):
        """Raise Lost when a stream resuming after `position` asks for events retention dropped.

        Asked once per stream, of the database: the ring may still hold events pruned since, and every
        process must answer a resume alike.
        """
        floor = events.floor(self.database())
        if position + 1 < floor:
            raise Lost(position, floor)

    def after(self, position, timeout):
        """Return the events after `position` (waiting up to `timeout` s for one); [] when none came.

        Raises Lost when the position is older than retention or newer than any event.
        """
        deadline = time.monotonic() + timeout
        while True:
            with self.cond:
                found = self._from_ring(position)
                if found:
                    return found
                left = deadline - time.monotonic()
                if found is not None:  # the ring reaches us, and nothing is new yet
                    if left <= 0:
                        return []
                    self.cond.wait(left)
                    continue
            found = self._from_database(position)
            if found or left <= 0:
                return found
            with self.cond:  # nothing after us in the database yet: wait for the ring to move
                self.cond.wait(min(left, 4 * POLL))

    def _from_ring(self, position):
        # Lock held. None: the ring does not reach back to `position`.
        if self.last is None:
            return None
        if position > self.last:
            return None
        first = self.ring[0].id if self.ring else self.last + 1
        if position + 1 < first:
            return None
        return [self.ring[i] for i in range(position + 1 - first, len(self.ring))]

    def database(self):
        """Return the app's database (atomic writes), usable outside a request."""
        if self._db is None:
            with self.app.app_context():
                self._db = database(self.app)
        return self._db

    def _from_database(self, position):
        db = self.database()
        top = events.top(db)
        if position > top:  # the mark may lag the events themselves: is `position` one?
            known = events.read(db, top, min(position - top, BATCH))
            if not known or known[-1]["_id"] < position:
                raise Lost(position, events.floor(db))
            top = position
        floor = events.floor(db)
        if position + 1 < floor:
            raise Lost(position, floor)
        docs = events.read(db, position, BATCH)
        if not docs and self.last is not None and self.last > position and top > position:
            following = events.next_after(db, position)  # a hole the feed stepped over (see _follow)
            if following is not None and following <= self.last:
                docs = events.read(db, following - 1, BATCH)
        return [render(doc, self.date_format) for doc in docs]

    # -- the thread -------------------------------------------------------------------------

    def _ensure_running(self):
        if self.thread is not None:
            return
        with self.cond:
            if self.thread is None:
                self.thread = threading.Thread(target=self._run, name="rm-event-feed", daemon=True)
                self.thread.start()

    def _run(self):
        hole_since, ticks = None, 0
        try:
            while self.readers > 0 or time.monotonic() - self.last_reader < IDLE_STOP:
                with background.one_pass("event feed: reading events", log):
                    db = self.database()  # here, in the loop: the database may be down at first
                    top, epoch = events.head(db)
                    if self.last is None or self._restart or top < self.last or epoch != (self.epoch or epoch):
                        # (Another epoch, or the mark went back: the collections were emptied, or restored.)
                        self._restart = False
                        self._begin(top)
                    self.epoch = epoch
                    ticks += 1
                    # Now and then even if the mark did not move: a writer may have died before raising it.
                    if top > (self.last or 0) or ticks % 50 == 0:
                        hole_since = self._follow(db, top, hole_since)
                        if hole_since is None and top > (self.last or top):
                            continue  # more to read at once
                time.sleep(POLL)
        except background.AppGone:
            pass
        finally:
            with self.cond:
                self.thread = None
                self.last = None
                self.ring.clear()
                self.cond.notify_all()

    def forget(self):
        """Start again from the database's newest event (after the database was emptied: tests)."""
        with self.cond:
            self._forget()

    def _forget(self):
        # Lock held.
        self._restart = True
        self.ring.clear()
        self.last = None

    def _begin(self, top):
        with self.cond:
            self.ring.clear()
            self.last = top
            self.cond.notify_all()

    def _follow(self, db, top, hole_since):
        # Read what came after self.last; return since when a hole has held us up (None: no hole).
        last = self.last
        if last is None:
            return None  # forgotten meanwhile: the next tick begins again
        floor = events.floor(db)
        if last + 1 < floor:
            log.warning("event feed: events %d to %d were pruned before this process read them", last + 1, floor - 1)
            self._begin(floor - 1)
            return None
        docs = events.read(db, last, BATCH)
        if docs:
            batch = [render(doc, self.date_format) for doc in docs]
            with self.cond:
                if self.last == last:
                    self.ring.extend(batch)
                    self.last = batch[-1].id
                    self.cond.notify_all()
            return None
        if top <= last:
            return None
        now = time.monotonic()
        if hole_since is None:
            return now
        if now - hole_since > HOLE_PATIENCE:
            following = events.next_after(db, last)
            if following is not None:
                log.warning("event feed: no event %d after %d s (deleted by hand?); going on from %d",
                            last + 1, HOLE_PATIENCE, following)
                self._begin(following - 1)
            return None
        return hole_since


def feed(app):
    """Return the app's Feed."""
    return app.extensions["rm_event_feed"]


def init_app(app):
    """Give the app its event feed (its thread starts with the first stream)."""
    app.extensions["rm_event_feed"] = Feed(app)
