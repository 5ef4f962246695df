"""What every lifecycle function is given: the database, the clock, the policy, and who acts.

`Core` is built by the API per request (api/db.py `core()`), by the admin tools, and directly by
the fast tests with a `ManualClock`. Core never reads Flask's config: the API turns its settings
into a `Policy` once (api/config.py `policy()`).
"""

import dataclasses

from .candidates import CandidatePasses
from .clock import SYSTEM


@dataclasses.dataclass(frozen=True)
class Actor:
    """Who does a change and why: the history's `user`, `reason` and `job_id` (None: the item's own)."""

    user: str | None = None
    reason: str | None = None
    job_id: str | None = None

    def because(self, reason):
        """Return this actor with `reason` (kept when `reason` is None)."""
        return self if reason is None else dataclasses.replace(self, reason=reason)


NOBODY = Actor()


@dataclasses.dataclass(frozen=True)
class Policy:
    """The allocator's settings (api/config.py maps RM_* names onto these)."""

    grace_seconds: int = 120  # the sweep repairs only what is older; requests give up after half
    idempotency_wait: float = 10.0  # how long a repeated request waits for the first
    default_lease_seconds: int = 4 * 3600  # a reservation made without a lease gets this one
    max_lease_seconds: int = 7 * 86400  # no lease (or extension) ends later than this from now
    pxe_timeout: float = 3600.0  # a machine in pxe longer than this becomes pxe_failed (0: never)
    max_waiting_per_user: int = 10  # queued requests per user (429 beyond)
    max_machines_per_user: int = 0  # machines held (active) plus asked for, per user; 0: no limit
    aging_seconds: float = 60.0  # a waiting request gains one priority point per this many seconds


@dataclasses.dataclass(frozen=True)
class Core:
    """The database (its conditional writes atomic: atomic.py), the clock, the policy and the caches."""

    db: object
    clock: object = SYSTEM
    policy: Policy = Policy()
    candidates: CandidatePasses = dataclasses.field(default_factory=CandidatePasses)

    def now(self):
        """Return the clock's time (tz-aware UTC, milliseconds)."""
        return self.clock.now()

    def with_db(self, db):
        """Return this context over another database (the same clock, policy and caches)."""
        return dataclasses.replace(self, db=db)
