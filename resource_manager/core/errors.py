"""What the lifecycles refuse: one exception family, turned into HTTP answers by one handler (api/errors.py).

    AllocationError(message, status, retry_after)   anything the allocator cannot do now; 503: retry
    ├── Shortfall(requested, available)             409: fewer free than asked; nothing was taken
    ├── Impossible(requested, matching)             409: more than will ever match; nothing waits
    └── QuotaExceeded                                429: a per-user limit (waiting requests, machines held)
"""


class AllocationError(Exception):
    """A request the allocator cannot meet; `status` is the HTTP answer (503: retry after `retry_after` s)."""

    def __init__(self, message, status=409, retry_after=None, **details):
        super().__init__(message)
        self.message = message
        self.status = status
        self.retry_after = retry_after if retry_after is not None else (1 if status == 503 else None)
        self.details = details

    def headers(self):
        """Return the headers of the HTTP answer."""
        return {"Retry-After": str(self.retry_after)} if self.retry_after else None


class Shortfall(AllocationError):
    """Fewer resources available than requested; nothing was taken."""

    def __init__(self, requested, available, why=None):
        super().__init__(f"requested {requested}, {available} available" + (f": {why}" if why else ""))
        self.requested, self.available = requested, available


class Impossible(AllocationError):
    """More machines asked for than will ever match: refused at once, never queued."""

    def __init__(self, requested, matching, why=None):
        super().__init__(why or f"requested {requested}, but only {matching} machine"
                                f"{'s match' if matching != 1 else ' matches'} the constraints (in any state): "
                                "it can never be met")
        self.requested, self.matching = requested, matching


class QuotaExceeded(AllocationError):
    """A per-user limit would be passed (429)."""

    def __init__(self, message, retry_after=None):
        super().__init__(message, 429, retry_after)
