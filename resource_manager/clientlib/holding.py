"""Holding machines: reserve, keep the reservation alive by heartbeats, release. One routine for all.

Behind `with rm.holding(...)`, `rmctl run` (cli/run.py) and the pytest plugin's `rm_machines`:

    reserve (with heartbeat_seconds H) -> the machine documents read (one GET)
    -> a daemon thread POSTs /reservations/<id>/heartbeat every H/3
    -> release; or keep (for a post-mortem: an exact lease from now, no more heartbeats)

What a crash at each step leaves, and who repairs it:
- killed while waiting in line: Ctrl-C cancels the queued request (waiting.py); a request that
  landed unheard (killed before the answer) has a heartbeat period too, so the server ends it H s
  after its grant;
- killed while holding (kill -9, the host gone): no more heartbeats, so the server's upkeep ends the
  reservation (`expired`, "no heartbeat for H s") within H s and a tick;
- the server restarting: a beat that fails is sent again (the client's retries, then every
  RETRY_SECONDS) until one lands; the window is H s, so a restart well under H s loses nothing;
- the reservation ended under us (its lease ran out, someone released it, a window was missed):
  the next beat answers 409, `on_lost(message)` is called once and the beats stop. Beats refused
  otherwise (a revoked token) for a whole window mean the same: the server has ended it by then.

The thread is a daemon (it never keeps a process alive) and blocks the asynchronous signals, so
they go to the main thread, where Python handles them and where `rmctl run` waits for them.
"""

from __future__ import annotations

import datetime
import logging
import signal
import threading
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any

from . import waiting
from .alloc import AllocationMixin
from .base import Document, Progress
from .errors import APIError, Conflict, NotFound, ReservationNotGranted, ResourceManagerError

Seconds = float | datetime.timedelta

log = logging.getLogger(__name__)

RETRY_SECONDS = 1.0  # after a beat that failed (server down, 5xx), the next try
ASYNC_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGCHLD",
                                                         "SIGALRM", "SIGUSR1", "SIGUSR2") if hasattr(signal, name))


class Hold:
    """Machines held by one reservation: `reserve()` (or `attach()`), `start()` the beats, `release()` or `keep()`.

    As a context manager: reserve and start on entry (giving the reservation, with the machine
    documents under "machines"), stop and release on exit, whatever ends the block.
    """

    def __init__(self, client: AllocationMixin, count: int = 1, *, where: Mapping[str, Any] | None = None,
                 wait: Seconds | None = None, heartbeat: Seconds | None = 60, lease: Seconds | None = None,
                 job_id: str | None = None, owner: str | None = None, reason: str | None = None,
                 on_progress: Progress | None = None, on_lost: Callable[[str], object] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.client = client
        self.count, self.where, self.job_id, self.owner, self.reason = count, where, job_id, owner, reason
        self.wait = waiting.wait_seconds(wait)
        self.heartbeat: int | None = waiting.wait_seconds(heartbeat) or None
        self.lease: int | None = waiting.wait_seconds(lease) or None
        self.on_progress = on_progress
        self.on_lost = on_lost
        self.clock = clock
        self.reservation: Document | None = None  # the reservation as last answered, with "machines"
        self.lost: str | None = None  # why the reservation ended under us, once it has
        self.beats = 0  # heartbeats accepted
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.owned = True  # made here, so released here (attach(): someone else's)

    @property
    def id(self) -> str | None:
        """The reservation's id (None before it is made)."""
        return str(self.reservation["_id"]) if self.reservation else None

    @property
    def hostnames(self) -> list[str]:
        """The hostnames held, sorted."""
        return sorted(self.reservation.get("hostnames") or []) if self.reservation else []

    def reserve(self) -> Document:
        """Reserve the machines (waiting in line if `wait`); return the reservation with its "machines".

        Raises what client.reserve() raises (Conflict, WaitTimedOut, ReservationInterrupted...).
        """
        res = self.client.reserve(self.count, where=self.where, owner=self.owner, job_id=self.job_id,
                                  lease_seconds=self.lease, reason=self.reason, wait=self.wait or None,
                                  on_progress=self.on_progress, heartbeat_seconds=self.heartbeat)
        self.reservation = res
        try:
            return self._with_machines(res)
        except BaseException:
            self.release_quietly()  # granted, but we cannot go on: let go of it now
            raise

    def attach(self, reservation_id: str) -> Document:
        """Hold an existing active reservation (not released here); return it with its "machines".

        Beats follow its own heartbeat period (or `heartbeat`, to notice its end, when it has none).
        Raises Conflict when it has ended, NotFound, ReservationNotGranted when it still waits in line.
        """
        res = self.client.heartbeat(reservation_id)
        if res.get("state") != "active":
            raise ReservationNotGranted(f"reservation {reservation_id} is {res.get('state')}: not granted yet", res)
        self.owned = False
        self.heartbeat = res.get("heartbeat_seconds") or self.heartbeat
        self.reservation = res
        return self._with_machines(res)

    def _with_machines(self, res: Document) -> Document:
        machines = list(self.client.iter(where={"reservation": res["_id"]}, sort="hostname", path="/machines"))
        self.reservation = dict(res, machines=[{k: v for k, v in m.items() if k != "_links"} for m in machines])
        return self.reservation

    def start(self) -> None:
        """Start the heartbeat thread (a daemon); nothing to do for a reservation without heartbeats."""
        if self.heartbeat and self._thread is None and self.reservation is not None:
            self._thread = threading.Thread(target=self._beat, args=(_beating_client(self.client, self.heartbeat),),
                                            name=f"rm-heartbeat-{self.id}", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the heartbeats (waiting up to `timeout` s for a beat under way)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def release(self) -> Document | None:
        """Stop beating and release the reservation (if made here); return the answer of the release, or None."""
        self.stop()
        if self.id is None or not self.owned:
            return None
        return self.client.release(self.id)

    def release_quietly(self) -> None:
        """Release, or if that fails, log it: without heartbeats the server frees it anyway."""
        try:
            self.release()
        except ResourceManagerError as e:  # it ends by itself, for lack of heartbeats
            log.warning("could not release reservation %s: %s", self.id, e)

    def keep(self, seconds: int, reason: str) -> Document:
        """Stop beating and keep the machines `seconds` more from now (an exact lease), then let them expire.

        Returns the reservation as extended (its new `expires`). Raises Conflict when it has ended.
        """
        self.stop()
        if self.id is None:
            raise ValueError("nothing is held: reserve() or attach() first")
        return self.client.extend(self.id, seconds, heartbeat_seconds=None, exact=True, reason=reason)

    def __enter__(self) -> Document:
        res = self.reserve()
        try:
            self.start()
        except BaseException:
            self.release()
            raise
        return res

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.release()

    # -- the heartbeat thread ----------------------------------------------------------------------

    def _beat(self, beater: AllocationMixin) -> None:
        _block_async_signals()
        period = self.heartbeat or 0
        interval = period / 3
        rid = self.id or ""
        accepted = self.clock()
        wait = interval
        try:
            while not self._stop.wait(wait):
                try:
                    beater.heartbeat(rid)
                except (Conflict, NotFound) as e:
                    self._lose(e.message)
                    return
                except APIError as e:
                    if e.status < 500 and self.clock() - accepted > period:
                        self._lose(f"heartbeats refused for over {period} s ({e.describe()}): "
                                   "the server has ended the reservation")
                        return
                    log.warning("heartbeat of reservation %s refused: %s", self.id, e.describe())
                    wait = RETRY_SECONDS
                    continue
                except ResourceManagerError as e:  # cannot connect, no answer: the server may be restarting
                    log.warning("heartbeat of reservation %s failed: %s", self.id, e.message or e)
                    wait = RETRY_SECONDS
                    continue
                except Exception:  # a bug: say so, and keep the reservation alive all the same
                    log.exception("heartbeat of reservation %s failed", self.id)
                    wait = RETRY_SECONDS
                    continue
                self.beats += 1
                accepted = self.clock()
                wait = interval
        finally:
            beater.close()

    def _lose(self, message: str) -> None:
        if self._stop.is_set():
            return  # we are releasing it ourselves
        self.lost = message
        if self.on_lost is not None:
            self.on_lost(message)
        else:
            log.warning("reservation %s ended while held: %s", self.id, message)


def _beating_client(client: AllocationMixin, period: int) -> AllocationMixin:
    """Return a client of its own for the heartbeat thread: each try is cut short enough to leave room
    for another within the heartbeat window."""
    return client.clone(timeout=min(client.timeout, max(2.0, period / 3)), retry_time=min(client.retry_time, period))


def _block_async_signals() -> None:
    # Signals go to the main thread: Python runs its handlers there, and `rmctl run` waits for them there.
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_BLOCK, ASYNC_SIGNALS)
