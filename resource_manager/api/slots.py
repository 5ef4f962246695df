"""Slots for long-held requests: at most LONG_REQUEST_SLOTS per process, the rest refused at once.

A request that holds its worker thread for long (an event stream, a long poll) takes a slot first.
Under gunicorn (gthread) each such request holds one of the worker's RM_THREADS threads for its
whole length: with the cap below the thread count, threads stay free for /healthz and every
ordinary request however many clients wait. Beyond the cap the answer is an immediate 503 with
Retry-After, in our error shape; the request holds nothing. Each long request must also end by
itself after a bounded time (the stream's EVENTS_STREAM_SECONDS, a long poll's wait), so that
slots go round and a restart waits for nobody for long.

    slot = slots.take("events")            # aborts 503 when every slot is held
    response.call_on_close(slot.release)   # a streamed answer: released when the server closes it
    with slots.take("long-poll"):          # or for the length of a block
        ...
"""

import threading

from flask import abort, current_app

from .errors import error_response

DEFAULT_SLOTS = 2
RETRY_AFTER = 5


class Slot:
    """One slot held; release() (or leaving the `with` block) gives it back, once."""

    def __init__(self, slots, kind):
        self._slots, self.kind = slots, kind
        self._released = False

    def release(self):
        self._slots._give_back(self)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


class Slots:
    """The long-request slots of one app in one process."""

    def __init__(self, capacity):
        self.capacity = max(0, int(capacity))
        self._lock = threading.Lock()
        self.held = {}  # kind -> how many

    def in_use(self):
        """Return how many slots are held."""
        with self._lock:
            return sum(self.held.values())

    def try_take(self, kind):
        """Return a Slot, or None when all are held."""
        with self._lock:
            if sum(self.held.values()) >= self.capacity:
                return None
            self.held[kind] = self.held.get(kind, 0) + 1
            return Slot(self, kind)

    def _give_back(self, slot):
        with self._lock:
            if not slot._released:
                slot._released = True
                self.held[slot.kind] -= 1


def slots(app=None):
    """Return the app's Slots."""
    return (app or current_app).extensions["rm_slots"]


def take(kind):
    """Return a Slot of the current app; abort with 503 and Retry-After when every slot is held."""
    slot = slots().try_take(kind)
    if slot is None:
        abort(error_response(503, f"this server process already holds its {slots().capacity} long requests "
                                  f"(streams, long polls); retry in {RETRY_AFTER} s, or raise LONG_REQUEST_SLOTS "
                                  "(with RM_THREADS)", headers={"Retry-After": str(RETRY_AFTER)}))
    return slot


def init_app(app):
    """Give the app its slots: LONG_REQUEST_SLOTS per process."""
    app.extensions["rm_slots"] = Slots(app.config.get("LONG_REQUEST_SLOTS", DEFAULT_SLOTS))
