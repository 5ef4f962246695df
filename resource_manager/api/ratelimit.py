"""Exponential backoff on repeated bad passwords, per key, atomic: a burst is no bypass.

The key is chosen by the caller (auth.py): a client's device token when it presents a valid
one for the account, else the (username, client address) pair; for API tokens (tokens.py) the
token's id and the client address, or the address alone for malformed and unknown tokens.

Atomic per key: a password check is admitted (begin) before it runs and counted (end) after,
and checks still running count against the allowance. So with `max_failures` = 5, a burst of
any number of guesses sent at once gets at most 5 checked; the others wait for those to finish
(at most `admit_wait` seconds) and are then refused with the backoff delay, or, if one of
them succeeded, checked in turn (a client sending many requests at once with the right
password is not refused).
"""

import logging
import math
import threading
import time

from flask import abort

from .errors import error_response

log = logging.getLogger(__name__)


def refuse(wait, what):
    """Abort the request: 429 with Retry-After, "too many failed <what>; retry in N s"."""
    seconds = str(math.ceil(wait))
    abort(error_response(429, f"too many failed {what}; retry in {seconds} s", headers={"Retry-After": seconds}))


class FailureLimiter:
    """Counts failed logins per key; after `max_failures`, refuses that key for a doubling delay.

    In memory and per process: with N gunicorn workers an attacker gets at most N times the
    allowance, still a few dozen guesses an hour instead of thousands a second.
    """

    def __init__(self, max_failures=5, window=900.0, base_delay=1.0, max_delay=900.0, max_keys=10000,
                 clock=time.monotonic, admit_wait=10.0):
        self.max_failures = max_failures
        self.window = window
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.max_keys = max_keys
        self.clock = clock
        self.admit_wait = admit_wait
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._failures = {}  # key -> (count, time of the last failure)
        self._pending = {}  # key -> password checks admitted and not yet ended

    def _delay(self, count):
        if count < self.max_failures:
            return 0.0
        return min(self.max_delay, self.base_delay * 2 ** min(count - self.max_failures, 60))

    def _state(self, key, now):
        # (failures, seconds still to wait); forgets a key quiet for a whole window. Lock held.
        entry = self._failures.get(key)
        if entry is None:
            return 0, 0.0
        count, last = entry
        if now - last > self.window:
            del self._failures[key]
            return 0, 0.0
        return count, max(0.0, last + self._delay(count) - now)

    def retry_after(self, key):
        """Return the seconds `key` must still wait before trying again (0 when it may try now)."""
        with self._lock:
            return self._state(key, self.clock())[1]

    def begin(self, key):
        """Admit one password check for `key`: return 0 (admitted: call end() after) or the seconds to wait.

        Checks in flight count as failures until they end, so no burst exceeds the allowance.
        """
        give_up = time.monotonic() + self.admit_wait
        with self._changed:
            while True:
                count, wait = self._state(key, self.clock())
                if wait:
                    return wait
                pending = self._pending.get(key, 0)
                # Below the limit: what is left of it; at or above it (the wait is over): one at a time.
                if pending < max(1, self.max_failures - count):
                    self._pending[key] = pending + 1
                    return 0
                left = give_up - time.monotonic()
                if left <= 0:
                    return max(self.base_delay, 1.0)
                self._changed.wait(left)

    def end(self, key, ok):
        """Count the result of a check admitted by begin(): in one step, so no waiter sees it half done."""
        with self._changed:
            pending = self._pending.get(key, 1) - 1
            if pending:
                self._pending[key] = pending
            else:
                self._pending.pop(key, None)
            if ok:
                self._failures.pop(key, None)
                count = delay = 0
            else:
                count, delay = self._count_failure(key)
            self._changed.notify_all()
        self._log(key, count, delay)

    def failed(self, key):
        """Record a failed login for `key`; return the delay it now has to wait."""
        with self._changed:
            count, delay = self._count_failure(key)
            self._changed.notify_all()
        self._log(key, count, delay)
        return delay

    def _count_failure(self, key):
        # Lock held.
        now = self.clock()
        count, last = self._failures.get(key, (0, now))
        if now - last > self.window:
            count = 0
        count += 1
        self._failures[key] = (count, now)
        if len(self._failures) > self.max_keys:
            self._prune(now)
        return count, self._delay(count)

    @staticmethod
    def _log(key, count, delay):
        if delay:
            # The username (or a token's id, not secret), never the password or token; truncated, as it
            # may be anything a client sent.
            who = str(key[0])[:64]
            who = ("unknown or malformed tokens" if who == "token:?" else f"token {who[6:]}" if who.startswith("token:")
                   else f"user {who!r}")
            log.warning("%d failed logins for %s from %s: refusing it for %.0f s", count, who, key[1], math.ceil(delay))

    def succeeded(self, key):
        """Forget the failures of `key` after a successful login."""
        with self._changed:
            self._failures.pop(key, None)
            self._changed.notify_all()

    def _prune(self, now):
        # Forget expired keys first; if a flood of fresh ones remains, the oldest go.
        for key, (_count, last) in list(self._failures.items()):
            if now - last > self.window:
                del self._failures[key]
        # Down to 90%, so that a flood of new keys prunes once per thousand, not on every one.
        excess = len(self._failures) - int(self.max_keys * 0.9)
        if excess > 0:
            oldest = sorted(self._failures.items(), key=lambda item: item[1][1])[:excess]
            for key, _entry in oldest:
                del self._failures[key]


def from_config(config):
    """Return a FailureLimiter set up by AUTH_MAX_FAILURES, AUTH_FAILURE_WINDOW, AUTH_BACKOFF_*."""
    return FailureLimiter(
        max_failures=int(config.get("AUTH_MAX_FAILURES", 5)),
        window=float(config.get("AUTH_FAILURE_WINDOW", 900)),
        base_delay=float(config.get("AUTH_BACKOFF_BASE", 1)),
        max_delay=float(config.get("AUTH_BACKOFF_MAX", 900)),
    )
