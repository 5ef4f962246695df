"""Reservations, address pools and history for the dashboard."""

import pymongo

from ..api.db import database
from ..api.routes import pools as pool_routes
from ..core import allocation, history
from ..core.addresses import POOLS

RELEASE_REASON = "freed from the dashboard"


def active_reservations(limit=50):
    """Return the active reservations, newest first."""
    fields = {"owner": 1, "job_id": 1, "hostnames": 1, "expires": 1, "count": 1, "_created": 1}
    cursor = database()[allocation.RESERVATIONS].find({"state": "active"}, fields)
    return list(cursor.sort("_created", pymongo.DESCENDING).limit(limit))


def current_reservation(machine):
    """Return the active reservation holding `machine` (a document), or None."""
    if not machine.get("reservation"):
        return None
    found = database()[allocation.RESERVATIONS].find_one({"_id": machine["reservation"]})
    return found if found and found.get("state") == "active" else None


def pools():
    """Return the address pools with their utilisation."""
    return [pool_routes.render(pool) for pool in database()[POOLS].find().sort("name", pymongo.ASCENDING)]


def machine_history(machine, limit=50):
    """Return the machine's history, newest first."""
    query = {"resource": "machines", "name": machine["hostname"]}
    cursor = database()[history.COLLECTION].find(query).sort([("at", pymongo.DESCENDING), ("_id", -1)])
    return list(cursor.limit(limit))


def release(reservation_id, username):
    """Release a reservation; return the freed hostnames, or None if there is no such reservation.

    Raises allocation.AllocationError when it cannot be released now.
    """
    return allocation.release(database(), reservation_id, username, RELEASE_REASON)
