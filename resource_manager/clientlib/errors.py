"""Client exceptions: one base carrying .response, a subclass per kind of failure.

    ResourceManagerError (alias RequestFailureException)
    +-- APIError                 the server answered 4xx/5xx: .status, .message, .issues
    |   +-- Unauthorized         401: no, wrong or dead credentials (a revoked or expired token)
    |   +-- Forbidden            403: the role, or the token's scope, may not do this
    |   +-- NotFound             404
    |   +-- Conflict             409
    |   +-- PreconditionFailed   412
    |   +-- ValidationError      422: .issues per field
    +-- TransportError           could not connect, or no answer in time
    +-- ReservationNotGranted    reserve(wait=...): WaitTimedOut, ReservationCancelled
    ReservationInterrupted       a KeyboardInterrupt (Ctrl-C while waiting in line)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # requests is not imported for the errors alone (rmctl --version stays light)
    import requests


class ResourceManagerError(Exception):
    """Base of every client error; `.response` is the requests.Response when there was one.

    ``str(error)`` is "status:text" when there is a response, as the original
    RequestFailureException had it, so old scripts that print it keep working.
    """

    def __init__(self, message: str = "", response: requests.Response | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.response = response

    def __str__(self) -> str:
        if self.response is not None:
            return f"{self.response.status_code}:{self.response.text}"
        return self.message


# Old scripts catch this name.
RequestFailureException = ResourceManagerError


class APIError(ResourceManagerError):
    """The server answered with an error status (4xx/5xx)."""

    def __init__(self, status: int, message: str, issues: Any = None, response: requests.Response | None = None,
                 method: str | None = None, url: str | None = None) -> None:
        super().__init__(message, response)
        self.status = status
        self.issues: Any = issues or {}
        self.method = method
        self.url = url

    def describe(self) -> str:
        """Return the error as one line: status, reason and the field issues."""
        text = f"{self.status} {self.message}"
        if self.issues:
            text += ": " + format_issues(self.issues)
        return text


class Unauthorized(APIError):
    """401: no credentials, wrong ones, or a token that is malformed, unknown, revoked or expired."""


class Forbidden(APIError):
    """403: the account's role, or the token's scope, may not do this."""


class NotFound(APIError):
    """404: no such item or route."""


class ValidationError(APIError):
    """422: the document breaks the schema; `.issues` maps each field to what is wrong."""


class Conflict(APIError):
    """409: a unique key is taken, or an allocation cannot be met."""


class PreconditionFailed(APIError):
    """412: the item changed since it was read (its ETag no longer matches)."""


class TransportError(ResourceManagerError):
    """The server could not be reached, or did not answer in time."""

    def __init__(self, message: str, endpoint: str | None = None, cause: BaseException | None = None) -> None:
        super().__init__(message)
        self.endpoint = endpoint
        self.cause = cause


_BY_STATUS: dict[int, type[APIError]] = {401: Unauthorized, 403: Forbidden, 404: NotFound, 409: Conflict,
                                         412: PreconditionFailed, 422: ValidationError}


def format_issues(issues: Any, prefix: str = "") -> str:
    """Return Eve's `_issues` (nested dicts/lists of messages) as "field: why; field: why"."""
    parts: list[str] = []
    if isinstance(issues, dict):
        for field, value in issues.items():
            parts.append(format_issues(value, f"{prefix}{field}") if isinstance(value, dict)
                         else f"{prefix}{field}: {_flat(value)}")
    elif isinstance(issues, list):
        parts.extend(format_issues(item, prefix) for item in issues)
    else:
        parts.append(f"{prefix}: {issues}" if prefix else str(issues))
    return "; ".join(p for p in parts if p)


def _flat(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(_flat(v) for v in value)
    if isinstance(value, dict):
        return format_issues(value)
    return str(value)


def error_from_response(response: requests.Response) -> APIError:
    """Return the APIError subclass matching an error response, message and issues parsed from its body."""
    message: str = response.reason or "error"
    issues: Any = None
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        error = body.get("_error")
        if isinstance(error, dict) and error.get("message"):
            message = error["message"]
        elif isinstance(error, str):
            message = error
        issues = body.get("_issues")
        if issues is None and isinstance(body.get("_items"), list):
            # A bulk POST that failed: name the rows at fault.
            issues = {f"item {i}": item.get("_issues") for i, item in enumerate(body["_items"])
                      if isinstance(item, dict) and item.get("_issues")}
    elif response.text and len(response.text) < 200:
        message = response.text.strip()
    cls = _BY_STATUS.get(response.status_code, APIError)
    request = response.request
    return cls(response.status_code, message, issues, response,
               method=getattr(request, "method", None), url=getattr(request, "url", None))


class ReservationNotGranted(ResourceManagerError):
    """A reservation that waited in line ended without machines; `.reservation` is its last state."""

    def __init__(self, message: str, reservation: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.reservation = reservation or {}


class WaitTimedOut(ReservationNotGranted):
    """The wait (reserve(wait=...)) ran out before enough machines were free; nothing is reserved."""


class ReservationCancelled(ReservationNotGranted):
    """The queued reservation was cancelled (DELETE) by someone else while it waited."""


class ReservationInterrupted(KeyboardInterrupt):
    """Ctrl-C while waiting in line; the queued reservation was cancelled first (if `.cancelled`)."""

    def __init__(self, reservation_id: str | None, cancelled: bool, error: BaseException | None = None) -> None:
        super().__init__(reservation_id)
        self.reservation_id = reservation_id
        self.cancelled = cancelled
        self.error = error
