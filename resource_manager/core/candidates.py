"""Candidates for reservations: idle machines matching a filter, one query serving many reservations.

A query for `{state: "idle", ...}` answers every idle machine. The embedded database (FerretDB)
cannot limit a filtered query in SQL: PostgreSQL sends every match, and closing the cursor early
makes FerretDB read the rest anyway, so each reservation that queried afresh paid for the whole
idle fleet (about 10 ms per 10,000 machines, and all 32 clients of a busy minute paid it).

So each process keeps, per filter, one open cursor (a *pass* over the idle machines, in the
database's own order) and hands its machines out a batch at a time to successive reservations;
machines a reservation did not need go back to the front. Anything handed out may be stale:
the allocator claims it (an insert that fails if someone holds it) and re-reads it before use,
so a stale candidate costs one refused insert, never a wrong grant. A pass older than
PASS_SECONDS, or run dry, is started afresh, at most once per reservation, so a reservation
that finds too few has looked at every machine idle when its last pass began.
"""

import collections
import json
import threading
import time

import pymongo.errors

PASS_SECONDS = 10.0
MAX_PASSES = 32  # per process: the most recent filters


class _Pass:
    def __init__(self, monotonic):
        self.monotonic = monotonic
        self.lock = threading.Lock()
        self.cursor = None
        self.started = 0.0
        self.waiting = collections.deque()  # handed back: not needed by the reservation that took them

    def restart(self, collection, query, batch):
        # Not closed: pymongo kills an abandoned cursor from its background thread (on FerretDB
        # that kill reads the rest of the SQL result, which need not delay a reservation).
        self.cursor = collection.find(query, {"hostname": 1}, batch_size=batch)
        self.started = self.monotonic()
        self.waiting.clear()

    def take(self, batch):
        taken = [self.waiting.popleft() for _ in range(min(batch, len(self.waiting)))]
        while self.cursor is not None and len(taken) < batch:
            try:
                taken.append(next(self.cursor))
            except StopIteration:
                self.cursor = None
            except pymongo.errors.OperationFailure:  # e.g. the cursor expired on the server
                self.cursor = None
        return taken


class CandidatePasses:
    """The open passes of one app, per filter (the most recent MAX_PASSES): reset with the app."""

    def __init__(self, clock=None):
        self.clock = clock
        self._passes = collections.OrderedDict()
        self._lock = threading.Lock()

    def monotonic(self):
        return self.clock.monotonic() if self.clock is not None else time.monotonic()

    def pass_for(self, collection, query):
        """Return the pass over `query`'s matches in `collection` (made if new)."""
        key = (id(collection.database.client), collection.full_name, json.dumps(query, sort_keys=True, default=str))
        with self._lock:
            found = self._passes.get(key)
            if found is None:
                found = self._passes[key] = _Pass(self.monotonic)
                while len(self._passes) > MAX_PASSES:
                    self._passes.popitem(last=False)
            self._passes.move_to_end(key)
            return found

    def forget(self):
        """Drop every pass (a test's database was emptied)."""
        with self._lock:
            self._passes.clear()


class Candidates:
    """Batches of idle machines matching `query` for one reservation (documents with _id and hostname)."""

    def __init__(self, passes, collection, query, batch):
        self._collection, self._query, self._batch = collection, query, batch
        self._pass = passes.pass_for(collection, query)
        self._restarted = False

    def next_batch(self):
        """Return the next batch, empty once every machine of a pass begun for us was offered."""
        with self._pass.lock:
            if not self._restarted and (self._pass.cursor is None and not self._pass.waiting
                                        or self._pass.monotonic() - self._pass.started > PASS_SECONDS):
                self._pass.restart(self._collection, self._query, self._batch)
                self._restarted = True
            taken = self._pass.take(self._batch)
            if not taken and not self._restarted:
                self._pass.restart(self._collection, self._query, self._batch)
                self._restarted = True
                taken = self._pass.take(self._batch)
            return taken

    def give_back(self, machines):
        """Return machines this reservation did not try, to the front of the pass, in order."""
        with self._pass.lock:
            self._pass.waiting.extendleft(reversed(machines))
