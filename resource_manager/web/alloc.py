"""Reservations, address pools and history for the dashboard, when allocation is installed.

The dashboard does not need allocation: without it (or before its routes are registered)
these return None and the pages say "not available" instead of failing.
"""

import pymongo
from flask import current_app

from ..api.db import database

try:
    from ..api.routes import pools as pool_routes
    from ..core import allocation, history
    from ..core.addresses import POOLS
except ImportError:  # a build without the allocation modules
    allocation = history = pool_routes = POOLS = None

RELEASE_REASON = "freed from the dashboard"


def available():
    """Return whether this server has the allocation routes (reservations, pools, history)."""
    return allocation is not None and "reservations" in current_app.blueprints


def active_reservations(limit=50):
    """Return the active reservations, newest first, or None without allocation."""
    if not available():
        return None
    fields = {"owner": 1, "job_id": 1, "hostnames": 1, "expires": 1, "count": 1, "_created": 1}
    cursor = database()[allocation.RESERVATIONS].find({"state": "active"}, fields)
    return list(cursor.sort("_created", pymongo.DESCENDING).limit(limit))


def current_reservation(machine):
    """Return the active reservation holding `machine` (a document), or None."""
    if not available() or not machine.get("reservation"):
        return None
    found = database()[allocation.RESERVATIONS].find_one({"_id": machine["reservation"]})
    return found if found and found.get("state") == "active" else None


def pools():
    """Return the address pools with their utilisation, or None without allocation."""
    if not available() or "pools" not in current_app.blueprints:
        return None
    return [pool_routes.render(pool) for pool in database()[POOLS].find().sort("name", pymongo.ASCENDING)]


def machine_history(machine, limit=50):
    """Return the machine's history, newest first, or None without allocation."""
    if not available():
        return None
    query = {"resource": "machines", "name": machine["hostname"]}
    cursor = database()[history.COLLECTION].find(query).sort([("at", pymongo.DESCENDING), ("_id", -1)])
    return list(cursor.limit(limit))


def release(reservation_id, username):
    """Release a reservation; return the freed hostnames, or None if there is no such reservation.

    Raises allocation.AllocationError when it cannot be released now.
    """
    return allocation.release(database(), reservation_id, username, RELEASE_REASON)
