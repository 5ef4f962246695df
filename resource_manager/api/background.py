"""One error funnel for the background threads of a server process: the upkeep ticker (upkeep.py),
the event feed (eventfeed.py) and the webhook worker (hookworker.py).

Each runs its loop one pass at a time inside `one_pass`: a database error is a warning and the next
pass tries again; any other error is logged with its traceback (a bug, never hidden) and the loop
goes on; the app's database client closed (the app is gone) raises AppGone, which ends the loop.
"""

import contextlib

import pymongo.errors


class AppGone(Exception):
    """The app's database client was closed: its background thread has nothing left to do."""


@contextlib.contextmanager
def one_pass(what, log, on_database_error=None):
    """Run one pass of a background loop named `what`, logging to `log`; see the module's docstring.

    `on_database_error(error)` is called after the warning (the upkeep notes an outage there).
    """
    try:
        yield
    except pymongo.errors.InvalidOperation as e:
        raise AppGone(what) from e
    except pymongo.errors.PyMongoError as e:
        log.warning("%s failed: %s", what, e)
        if on_database_error is not None:
            on_database_error(e)
    except Exception:
        log.exception("%s failed", what)
