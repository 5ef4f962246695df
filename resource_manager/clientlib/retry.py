"""Riding out restarts: urllib3's Retry, bounded in time, mounted so only safe requests are sent again.

What is sent again, after a connection error or a 502/503/504 (waiting as `Retry-After` says, else
with exponential backoff):
- every request that failed to connect at all (refused, connect timeout): nothing reached the server;
- GET, HEAD, OPTIONS, PUT, PATCH and DELETE, also after the answer was lost (writes to items carry
  If-Match, so a repeat of one that landed gets 412 or 404: the client then re-reads, see client.py);
- a POST only with an `Idempotency-Key` (the server answers the same reservation or allocation for
  the same key), or to a route that is harmless to repeat (extending a lease, a heartbeat, the sweep).
Any other POST whose answer is lost or is a 5xx is not repeated: it may have landed.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.connectionpool import ConnectionPool
from urllib3.exceptions import (
    ConnectTimeoutError,
    InvalidHeader,
    MaxRetryError,
    ProtocolError,
    ReadTimeoutError,
    ResponseError,
)
from urllib3.response import BaseHTTPResponse
from urllib3.util.retry import Retry

from .errors import TransportError

RETRY_STATUSES = frozenset({502, 503, 504})
REPLAYABLE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "PATCH", "DELETE"})
# POSTs that create nothing and end in the same state when repeated.
REPEATABLE_POSTS = re.compile(r"/reservations/[^/]+/(extend|heartbeat)$|/reservations/sweep$")
BACKOFF_MAX = 10.0



class RetryEvent(NamedTuple):
    """One retry about to happen: what failed (status or error) and how long we wait first."""

    attempt: int
    max_retries: int
    method: str | None
    url: str | None
    status: int | None
    error: Exception | None
    wait: float


class GaveUp(MaxRetryError):
    """Retries ran out (in count or in time); `.retries` is how many were made."""

    def __init__(self, pool: ConnectionPool | None, url: str | None, reason: Exception | None, retries: int = 0,
                 seconds: float = 0.0) -> None:
        super().__init__(pool, url, reason)  # type: ignore[arg-type]  # as urllib3 does, without a pool at times
        self.retries = retries
        self.seconds = seconds


class RetryPolicy(Retry):
    """urllib3's Retry plus a bound on the total time, an `on_retry` hook and an injectable clock.

    `max_time`: no retry starts later than this many seconds after the first failure. A
    `Retry-After` is honoured, never shortened: when it would end past that bound, the answer is
    given back now. Backoff waits (`backoff_factor` doubling, at most BACKOFF_MAX, with jitter) are
    cut to the time left.
    """

    # Only RETRY_STATUSES are retried, through status_forcelist; urllib3 would also retry 413 and
    # 429 that carry Retry-After, but a 429 here is the bad-password lockout: waiting prolongs nothing good.
    RETRY_AFTER_STATUS_CODES = frozenset()

    def __init__(self, *args: Any, max_time: float | None = None,
                 on_retry: Callable[[RetryEvent], object] | None = None, started: float | None = None,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], object] = time.sleep,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_time = max_time
        self.on_retry = on_retry
        self.started = started
        self.clock = clock
        self.sleeper = sleep

    def new(self, **kw: Any) -> RetryPolicy:
        kw.setdefault("max_time", self.max_time)
        kw.setdefault("on_retry", self.on_retry)
        kw.setdefault("started", self.started)
        kw.setdefault("clock", self.clock)
        kw.setdefault("sleep", self.sleeper)
        return super().new(**kw)

    def increment(self, method: str | None = None, url: str | None = None, response: BaseHTTPResponse | None = None,
                  error: Exception | None = None, _pool: ConnectionPool | None = None,
                  _stacktrace: Any = None) -> RetryPolicy:
        started = self.started if self.history and self.started is not None else self.clock()
        try:
            retry = super().increment(method, url, response, error, _pool, _stacktrace)
        except MaxRetryError as e:
            raise GaveUp(_pool, url, e.reason, len(self.history), self.clock() - started) from e.reason
        retry.started = started
        if self.max_time is not None:
            left = self.max_time - (self.clock() - started)
            after = retry.retry_after(response)
            if left <= 0 or (after is not None and after > left):
                status = response.status if response is not None else None
                reason = error or ResponseError(f"{status} and no time left to wait {after} s")
                raise GaveUp(_pool, url, reason, len(self.history), self.clock() - started)
        return retry

    def wait_time(self, response: BaseHTTPResponse | None = None) -> float:
        """Return how long to wait before the next attempt: Retry-After, else the backoff."""
        after = self.retry_after(response)
        if after is not None:
            return after
        wait = self.get_backoff_time()
        if self.max_time is not None and self.started is not None:
            wait = min(wait, max(0.0, self.max_time - (self.clock() - self.started)))
        return wait

    def retry_after(self, response: BaseHTTPResponse | None) -> float | None:
        """Return the seconds a response's Retry-After asks for, or None (absent, unreadable, not honoured)."""
        if response is None or not self.respect_retry_after_header:
            return None
        try:
            after = self.get_retry_after(response)
        except InvalidHeader:
            return None
        return None if after is None else float(after)

    def sleep(self, response: BaseHTTPResponse | None = None) -> None:
        wait = self.wait_time(response)
        if self.on_retry is not None:
            last = self.history[-1]
            self.on_retry(RetryEvent(len(self.history), self.total_configured, last.method, last.url,
                                     last.status, last.error, wait))
        if wait > 0:
            self.sleeper(wait)

    @property
    def total_configured(self) -> int:
        """The number of retries allowed in all."""
        return len(self.history) + int(self.total or 0)


def policy(max_retries: int, max_time: float | None, backoff: float,
           on_retry: Callable[[RetryEvent], object] | None = None,
           sleep: Callable[[float], object] = time.sleep) -> RetryPolicy:
    """Return the RetryPolicy for requests that are safe to send again."""
    return RetryPolicy(total=max_retries, connect=None, read=None, status=None, other=0, redirect=0,
                       allowed_methods=None, status_forcelist=RETRY_STATUSES, backoff_factor=backoff,
                       backoff_max=BACKOFF_MAX, backoff_jitter=backoff,
                       raise_on_status=False, raise_on_redirect=False, respect_retry_after_header=True,
                       max_time=max_time, on_retry=on_retry, sleep=sleep)


def connect_only(retry: RetryPolicy) -> RetryPolicy:
    """Return a copy of `retry` that retries only failures to connect (for POSTs that may create)."""
    return retry.new(read=False, status=0, status_forcelist=frozenset(), allowed_methods=frozenset({"POST"}))


def is_replayable(request: requests.PreparedRequest) -> bool:
    """Whether a prepared request may be sent again after its answer was lost or was a 5xx."""
    if request.method in REPLAYABLE_METHODS:
        return True
    if request.method == "POST":
        return "Idempotency-Key" in request.headers or bool(REPEATABLE_POSTS.search(urlsplit(request.url or "").path))
    return False


class RetryingAdapter(HTTPAdapter):
    """An HTTPAdapter that sends safe requests with `retry` and others with its connect-only copy.

    Two pools of connections under one mount: urllib3 takes the Retry from the adapter, so the
    choice per request is which adapter sends it (thread-safe, nothing switched in place).
    """

    def __init__(self, retry: RetryPolicy, **kwargs: Any) -> None:
        super().__init__(max_retries=retry, **kwargs)
        self._unsafe = HTTPAdapter(max_retries=connect_only(retry), **kwargs)

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> requests.Response:
        if is_replayable(request):
            return super().send(request, *args, **kwargs)
        return self._unsafe.send(request, *args, **kwargs)

    def close(self) -> None:
        super().close()
        self._unsafe.close()


def replayed(response: requests.Response | None) -> bool:
    """Whether `response` answers a request sent again after an attempt that may have reached the server."""
    retries = getattr(getattr(response, "raw", None), "retries", None)
    return any(entry.status is not None or not isinstance(entry.error, ConnectTimeoutError)
               for entry in getattr(retries, "history", ()) or ())


def describe_failure(event: RetryEvent) -> str:
    """Return what failed, in a few words, for a RetryEvent: "503 Service Unavailable", "connection refused"."""
    if event.status is not None:
        from http import HTTPStatus

        try:
            return f"{event.status} {HTTPStatus(event.status).phrase}"
        except ValueError:
            return str(event.status)
    if isinstance(event.error, ConnectTimeoutError) and "refused" in str(event.error):
        return "connection refused"
    if isinstance(event.error, ConnectTimeoutError):
        return "cannot connect"
    if isinstance(event.error, ReadTimeoutError):
        return "no answer in time"
    if isinstance(event.error, ProtocolError):
        return "connection broke before the answer"
    return type(event.error).__name__


def gave_up(error: BaseException) -> GaveUp | None:
    """Return the GaveUp inside a requests exception, or None."""
    for arg in getattr(error, "args", ()):
        if isinstance(arg, GaveUp):
            return arg
    return None


def holds(stored: Mapping[str, Any], sent: Mapping[str, Any], merge: bool = True) -> bool:
    """Whether a stored document already has every value `sent` (PATCH merges objects such as tags)."""
    for key, value in sent.items():
        if key.startswith("_"):  # _id, _etag and the other meta fields
            continue
        current = stored.get(key)
        if merge and isinstance(value, dict) and isinstance(current, dict):
            if not holds(current, value, merge):
                return False
        elif current != value and not (value in ("", None) and current in ("", None)):
            return False
    return True


def transport_error(error: requests.RequestException, method: str, path: str, url: str,
                    timeout: float) -> TransportError:
    """Return the TransportError that says what happened: no connection, no answer in time, a lost answer."""
    gave_up_error = gave_up(error)
    cause = gave_up_error.reason if gave_up_error is not None else (error.args[0] if error.args else None)
    retried = ""
    if gave_up_error is not None and gave_up_error.retries:
        count = gave_up_error.retries
        retried = f" (gave up after {count} {'retry' if count == 1 else 'retries'} in {gave_up_error.seconds:.1f} s)"
    unsure = "" if method in ("GET", "HEAD", "OPTIONS") else "; it may or may not have been done"
    if isinstance(error, requests.ConnectTimeout):
        message = f"cannot connect to {url}: no answer within {timeout:g} s{retried}"
    elif isinstance(error, requests.Timeout) or isinstance(cause, ReadTimeoutError):
        message = f"{url} did not answer within {timeout:g} s{retried}{unsure}"
    elif isinstance(error, requests.ConnectionError) and isinstance(cause, ProtocolError):
        message = f"{method} {path}: the connection to {url} broke before the answer came{retried}{unsure}"
    elif isinstance(error, requests.ConnectionError):
        message = f"cannot connect to {url}: {connection_reason(error)}{retried}"
    else:
        message = f"cannot send to {url}: {error}"
    return TransportError(message, url, error)


def connection_reason(error: BaseException) -> str:
    # requests nests the socket error a few levels deep; name the innermost cause.
    text = str(error)
    for marker in ("Connection refused", "Name or service not known", "timed out", "No route to host",
                   "Temporary failure in name resolution", "Connection reset"):
        if marker in text:
            return marker[0].lower() + marker[1:]
    return text.split(": ")[-1].rstrip(")'\"") if ": " in text else text
