"""Named mutexes held in the database: a document whose `_id` is the name.

Taking one is an insert, atomic on every engine and across hosts; a holder that died
leaves a document that goes stale after `stale`, then the next taker removes it.
For rare, short sections spanning several documents (one sweep at a time; one granting
pass at a time; a pool's overlap check and its insert), not for hot paths.
"""

import contextlib
import datetime

from pymongo.errors import DuplicateKeyError

from .store import LOCKS

POLL = 0.02


class Busy(Exception):
    """The mutex stayed held for longer than we were willing to wait."""


def try_take(core, name, stale):
    """Take mutex `name` if free (or stale); return whether we hold it."""
    db = core.db
    for _attempt in range(2):
        try:
            db[LOCKS].insert_one({"_id": name, "at": core.now()})
            return True
        except DuplicateKeyError:
            held = db[LOCKS].find_one({"_id": name})
            if held is not None and core.now() - held["at"] < stale:
                return False
            if held is not None:
                db[LOCKS].delete_one({"_id": name, "at": held["at"]})
    return False


def give_back(core, name):
    """Release mutex `name`."""
    core.db[LOCKS].delete_one({"_id": name})


@contextlib.contextmanager
def holding(core, name, wait=5.0, stale=datetime.timedelta(minutes=1)):
    """Hold mutex `name` for the block, waiting up to `wait` seconds for it (0: only if free now).

    Raises Busy when it stays held.
    """
    deadline = core.clock.monotonic() + wait
    while not try_take(core, name, stale):
        if core.clock.monotonic() >= deadline:
            raise Busy(name)
        core.clock.sleep(POLL)
    try:
        yield
    finally:
        give_back(core, name)
