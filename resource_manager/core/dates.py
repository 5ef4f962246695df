"""Dates as stored: a naive datetime read back from the database is UTC."""

import datetime


def aware(moment):
    """Return `moment` with its time zone: UTC when it has none.

    A client without tz_aware (rm-users, rm-check, scripts) reads stored dates back naive.
    """
    return moment if moment.tzinfo else moment.replace(tzinfo=datetime.timezone.utc)
