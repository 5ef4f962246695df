"""Time for core: one injected clock, so leases, waits, heartbeats and aging are tested by moving time.

Core never calls `datetime.now()`, `time.monotonic()` or `time.sleep()` itself: it asks the clock
of its `Core` (context.py). The service uses `SYSTEM`; tests and replays use a `ManualClock`,
which moves only when told (and whose `sleep` moves it, so a waiting loop ends without waiting).
"""

import datetime
import threading
import time

from .dates import aware

UTC = datetime.timezone.utc


def to_millis(moment):
    """Return `moment` cut to milliseconds: what BSON keeps, so a stored time compares equal to ours."""
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def whole_seconds(moment):
    """Return `moment` cut to whole seconds, as Eve stores `_created` and `_updated`."""
    return moment.replace(microsecond=0)


class SystemClock:
    """The real time."""

    def now(self):
        """Return the time: tz-aware UTC, to the millisecond."""
        return to_millis(datetime.datetime.now(UTC))

    def monotonic(self):
        """Return seconds on a clock that never goes back (for deadlines)."""
        return time.monotonic()

    def sleep(self, seconds):
        """Wait `seconds`."""
        time.sleep(max(0.0, seconds))


class ManualClock:
    """A clock that moves only when told: `advance(seconds)`, `set(moment)`, or `sleep(seconds)`."""

    def __init__(self, start=None):
        self._lock = threading.Lock()
        self._now = to_millis(aware(start or datetime.datetime(2030, 1, 1, tzinfo=UTC)))
        self._elapsed = 0.0

    def now(self):
        """Return the clock's time."""
        with self._lock:
            return self._now

    def monotonic(self):
        """Return the seconds this clock has moved since it was made."""
        with self._lock:
            return self._elapsed

    def advance(self, seconds):
        """Move the clock `seconds` forward; return the new time."""
        with self._lock:
            self._elapsed += seconds
            self._now = to_millis(self._now + datetime.timedelta(seconds=seconds))
            return self._now

    def sleep(self, seconds):
        """Move the clock instead of waiting (a loop that polls then ends at its deadline)."""
        self.advance(max(0.0, seconds))


SYSTEM = SystemClock()


def utcnow():
    """Return the real time in whole seconds, as Eve stores it (for code outside a `Core`: tokens, hooks)."""
    return whole_seconds(SYSTEM.now())
