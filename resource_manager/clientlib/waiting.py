"""Waiting in line: a queued reservation long-polled until it is granted, times out or is cancelled.

`POST /reservations` with `wait_seconds` answers 202 with the reservation `queued` when not enough
machines are free; `GET /reservations/<id>?wait=S` then answers as soon as its state changes, or
after S seconds. The server times a queued request out at its `wait_until`; the client keeps its
own deadline a little later only in case the server never says so, and then cancels the request
itself. Ctrl-C cancels the queued request (DELETE) before the interrupt goes on, so nobody's
machines wait for a client that is gone.
"""

from __future__ import annotations

import datetime
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, NoReturn
from urllib.parse import quote

from .base import Document, Progress
from .errors import APIError, ReservationCancelled, ReservationInterrupted, ReservationNotGranted, WaitTimedOut

# One long poll at most this long (the server allows 60). Each poll names the state we last saw
# (?state=), so a change that landed between two polls is answered at once; polls end every so often
# all the same, to follow the place in line.
POLL_SECONDS = 10
GRACE_SECONDS = 30  # past the wait, how long the client waits for the server to say `timed_out`
WAITING_STATES = ("pending", "queued")

if TYPE_CHECKING:
    import requests

    from .base import ClientBase


def wait_seconds(wait: float | datetime.timedelta | None) -> int:
    """Return `wait` (seconds, or a timedelta) as whole seconds; 0 for None. Raises ValueError if negative."""
    if wait is None:
        return 0
    seconds = wait.total_seconds() if isinstance(wait, datetime.timedelta) else float(wait)
    if not seconds >= 0 or math.isinf(seconds):
        raise ValueError(f"wait must be a number of seconds, 0 or more, not {wait!r}")
    return math.ceil(seconds)


def await_grant(client: ClientBase, res: Document, wait: int, on_progress: Progress | None = None,
                poll: int | None = None, clock: Callable[[], float] = time.monotonic) -> Document:
    """Long-poll the reservation `res` (as POST answered it) until it is active; return it.

    `on_progress(reservation)` is called while it waits in line: first, then whenever its place
    (`position`) changes. Raises WaitTimedOut, ReservationCancelled or ReservationNotGranted when it
    ends without machines; ReservationInterrupted (a KeyboardInterrupt) after cancelling it on Ctrl-C.
    """
    path = f"/reservations/{quote(res['_id'], safe='')}"
    poll = poll or POLL_SECONDS
    deadline = clock() + wait + GRACE_SECONDS
    shown: object = object()
    try:
        while res.get("state") in WAITING_STATES:
            if on_progress is not None and res.get("position") != shown:
                shown = res.get("position")
                on_progress(res)
                # The callback took its time: what changed meanwhile is read now, not after a whole poll.
                res = client.call("GET", path)
                continue
            left = deadline - clock()
            if left <= 0:  # the server never said timed_out: give up ourselves
                res = cancel(client, path) or res
                raise WaitTimedOut(_not_granted(res, f"the wait of {wait} s ran out"), res)
            seconds = max(1, min(poll, math.ceil(left)))
            try:
                res = client.call("GET", path, params={"wait": seconds, "state": res.get("state")},
                                  timeout=client.timeout + seconds)
            except APIError as e:
                if e.status != 503:
                    raise
                # Every long-poll slot of the server is taken (or it restarts): wait as it says, then ask again.
                time.sleep(min(_retry_after(e.response), max(0.0, deadline - clock())))
    except KeyboardInterrupt as interrupt:
        interrupted(client, lambda: res, interrupt)
    state = res.get("state")
    if state == "active":
        return res
    if state == "timed_out":
        raise WaitTimedOut(_not_granted(res, f"the wait of {wait} s ran out"), res)
    if state == "cancelled":
        raise ReservationCancelled(_not_granted(res, "it was cancelled while it waited"), res)
    raise ReservationNotGranted(_not_granted(res, f"it is {state}"), res)


def interrupted(client: ClientBase, reservation: Callable[[], Document | None],
                interrupt: KeyboardInterrupt) -> NoReturn:
    """Cancel the reservation `reservation()` returns after Ctrl-C; raise ReservationInterrupted."""
    rid = None
    try:
        rid = reservation()["_id"]  # type: ignore[index]  # None: a TypeError, reported as the cancel failing
        cancel(client, f"/reservations/{quote(rid, safe='')}")
    except Exception as e:  # noqa: BLE001  (the interrupt matters more; say the cancel failed)
        raise ReservationInterrupted(rid, False, e) from interrupt
    raise ReservationInterrupted(rid, True) from interrupt


def cancel(client: ClientBase, path: str, tries: int = 20) -> Document | None:
    """Cancel (DELETE) a queued reservation; return it as it now stands, or None if that cannot be read.

    A grant under way answers 503 (Retry-After: 1): asked again, the reservation is active by then
    and the DELETE releases it. The client's retries do this when they are on; this loop, when not.
    """
    for attempt in range(tries):
        try:
            client.call("DELETE", path)
            break
        except APIError as e:
            if e.status != 503 or attempt == tries - 1:
                raise
            time.sleep(_retry_after(e.response))
    try:
        res: Document = client.call("GET", path)
        return res
    except Exception:  # noqa: BLE001  (cancelled is what matters; its state is a courtesy)
        return None


def _retry_after(response: requests.Response | None) -> float:
    try:
        return min(5.0, max(0.1, float(response.headers.get("Retry-After", 1))))  # type: ignore[union-attr]
    except (AttributeError, TypeError, ValueError):
        return 1.0


def _not_granted(res: Document, why: str) -> str:
    count = res.get("count")
    what = f"{count} machine{'s' if count != 1 else ''}" if count is not None else "machines"
    return f"reservation {res.get('_id')} for {what} was not granted: {why}"
