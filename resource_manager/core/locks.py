"""The write locks of atomic.py: a host-wide flock, a PostgreSQL advisory lock, and the refusal.

Each is reentrant per thread (a write inside a locked block does not wait for itself), kept per
process (a forked child never shares its parent's lock), and let go by whatever holds it dying:
the kernel drops a dead process's flock, and PostgreSQL drops a session's advisory locks when
the session ends (a process killed: at once, its socket is closed; a host that vanished: when the
TCP keepalives set on the session give up, see AdvisoryLock).

Exceptions (both `pymongo.errors.ConnectionFailure`, so every caller that copes with the
database being away copes with these the same way, and the API answers 503 with Retry-After):

    WriteLockUnavailable   the lock could not be taken now (PostgreSQL away, or a wait too long)
    └── WritesRefused      this set-up cannot make writes atomic at all; the reason names the fix
"""

import contextlib
import fcntl
import logging
import os
import threading
import weakref

import psycopg
import psycopg.errors
from pymongo.errors import ConnectionFailure

log = logging.getLogger(__name__)

# How long a write waits for another host's write before it gives up (503): writes hold the lock
# for milliseconds, so a wait this long means a holder that hangs.
WAIT_SECONDS = 30
# On the lock's own session: the server gives up on a vanished client host after about
# idle + interval * count seconds (TCP; ignored on a Unix socket, where a dead client is seen at once),
# and a backend waiting for the lock notices its client went away.
SESSION_SETTINGS = {
    "lock_timeout": f"{WAIT_SECONDS}s",
    "tcp_keepalives_idle": "10",
    "tcp_keepalives_interval": "5",
    "tcp_keepalives_count": "3",
    "tcp_user_timeout": "25000",
    "client_connection_check_interval": "1000",
}


class WriteLockUnavailable(ConnectionFailure):
    """The write lock could not be taken now; the write was not made (retry later)."""


class WritesRefused(WriteLockUnavailable):
    """This set-up cannot serialise writes; every write that needs the lock is refused."""


class _Reentrant:
    """Per-process, per-thread reentrancy around an outer lock taken by `_take()` and let go by `_give()`."""

    _init_lock = threading.Lock()

    def __init__(self):
        self._pid = None

    def _fresh_process(self):
        """Called once in each process before its first use; set up what a process must not inherit."""

    def _ensure_process(self):
        if self._pid == os.getpid():
            return
        with self._init_lock:
            if self._pid == os.getpid():
                return
            self._mutex = threading.RLock()
            self._depth = 0
            self._fresh_process()
            self._pid = os.getpid()

    def close(self):
        """Let go of what this process opened for the lock (it opens again on next use)."""
        with self._init_lock:
            if self._pid == os.getpid():
                self._close()
            self._pid = None

    def _close(self):
        """Close what `_fresh_process` opened."""

    def __enter__(self):
        self._ensure_process()
        self._mutex.acquire()
        if self._depth == 0:
            try:
                self._take()
            except BaseException:
                self._mutex.release()
                raise
        self._depth += 1
        return self

    def __exit__(self, *exc):
        self._depth -= 1
        try:
            if self._depth == 0:
                self._give()
        finally:
            self._mutex.release()


class HostLock(_Reentrant):
    """A host-wide exclusive lock on the file `path`: threads and processes queue in the kernel.

    Blocking flock, not a polling library: waiters are woken in turn instead of sleeping
    between tries (filelock's 50 ms polls gave 1 s waits under four contending processes).
    """

    kind, scope = "flock", "host"

    def __init__(self, path, create=True):
        super().__init__()
        self.path, self.create = path, create

    def _fresh_process(self):
        # create=False: lock an existing file we may only read (flock needs no write access).
        flags = os.O_RDWR | os.O_CREAT if self.create else os.O_RDONLY
        self._fd = os.open(self.path, flags | os.O_CLOEXEC, 0o666)

    def _close(self):
        os.close(self._fd)

    def _take(self):
        fcntl.flock(self._fd, fcntl.LOCK_EX)

    def _give(self):
        fcntl.flock(self._fd, fcntl.LOCK_UN)

    def __str__(self):
        return self.path


class AdvisoryLock(_Reentrant):
    """An exclusive lock every host sees: a session-level PostgreSQL advisory lock on `key`.

    One connection per process (`connect()` opens it, autocommit), held open between writes; the
    threads of the process queue on a local mutex first, so the database sees one waiter per process.
    A connection lost between writes is opened again at the next write (once; then 503). A connection
    lost *while* the lock was held means the lock went with it: the write already made cannot be
    undone, so it is logged as an error for the operator (PostgreSQL restarted or failed over then).

    Raises WriteLockUnavailable when PostgreSQL cannot be reached or the wait exceeds WAIT_SECONDS.
    """

    kind, scope = "postgresql-advisory", "database"

    def __init__(self, connect, key, where):
        super().__init__()
        self.connect, self.key, self.where = connect, key, where

    def _fresh_process(self):
        # An inherited connection is left alone, never closed: closing it would end the parent's
        # session (and its lock). psycopg does not close a connection from another process when
        # it is collected either, nor does _close_owned.
        self._conn = self._finalizer = None

    def _close(self):
        self._drop()

    def _connection(self):
        if self._conn is None or self._conn.closed:
            conn = self.connect()
            for name, value in SESSION_SETTINGS.items():
                try:
                    conn.execute(f"SET {name} = '{value}'")
                except psycopg.errors.UndefinedObject:  # an older PostgreSQL: the others still apply
                    log.debug("PostgreSQL has no setting %s", name)
            self._conn = conn
            # Closed when the lock is collected or at exit, by this process only.
            self._finalizer = weakref.finalize(self, _close_owned, os.getpid(), conn)
        return self._conn

    def _take(self):
        for attempt in (1, 2):
            try:
                self._connection().execute("SELECT pg_advisory_lock(%s)", (self.key,))
                return
            except psycopg.errors.LockNotAvailable as e:
                raise WriteLockUnavailable(f"another host held the write lock for over {WAIT_SECONDS} s") from e
            except psycopg.OperationalError as e:
                self._drop()
                if attempt == 2:
                    raise WriteLockUnavailable(f"cannot take the write lock in PostgreSQL ({self.where}): "
                                               f"{str(e).strip()[:200]}") from e

    def _give(self):
        try:
            released = self._conn.execute("SELECT pg_advisory_unlock(%s)", (self.key,)).fetchone()[0]
        except psycopg.Error as e:
            released = False
            self._drop()
            log.debug("write lock session ended while held: %s", e)
        if not released:
            log.error("the PostgreSQL session holding the write lock ended during a write (PostgreSQL restarted "
                      "or failed over?): that one write was not serialised; run rm-check")

    def _drop(self):
        self._conn = None
        if self._finalizer is not None:
            self._finalizer()

    def __str__(self):
        return f"advisory lock {self.key}"


def _close_owned(pid, conn):
    if os.getpid() == pid:
        with contextlib.suppress(psycopg.Error):
            conn.close()


class RefusingLock:
    """The lock of a set-up that cannot serialise writes: taking it raises WritesRefused(reason)."""

    kind, scope = "none", None

    def __init__(self, reason):
        self.reason = reason

    def close(self):
        return None

    def __enter__(self):
        raise WritesRefused(f"writes refused: {self.reason}")

    def __exit__(self, *exc):
        return None

    def __str__(self):
        return "refused"


class NoLock:
    """No lock: the database makes conditional writes atomic itself (or serialisation is off)."""

    kind, scope = "none", None

    def close(self):
        return None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None

    def __str__(self):
        return "none"


NO_LOCK = NoLock()
