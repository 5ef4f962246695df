"""Reservations, the queue, address pools and history for the dashboard."""

import json

import pymongo
from flask import current_app

from ..api.db import core, database
from ..api.routes import pools as pool_routes
from ..api.upkeep import kick
from ..core import ending, history, queue
from ..core.context import Actor
from ..core.store import POOLS, RESERVATIONS
from . import queries

RELEASE_REASON = "freed from the dashboard"
CANCEL_REASON = "cancelled from the dashboard"


def active_reservations(limit=50):
    """Return the active reservations, newest first."""
    fields = {"owner": 1, "job_id": 1, "hostnames": 1, "expires": 1, "count": 1, "_created": 1}
    cursor = database()[RESERVATIONS].find({"state": "active"}, fields)
    return list(cursor.sort("_created", pymongo.DESCENDING).limit(limit))


def queued_reservations(limit=100):
    """Return the reservations waiting in line, in the queue's order, each with its `position` (1-based).

    Read fresh on every page (an equality on `state`): a place in line that is 10 s old misleads.
    """
    line = queue.waiting(core())
    for place, res in enumerate(line, 1):
        res["position"] = place
        res["constraints"] = _constraints(res.get("where"))
    return line[:limit]


def _constraints(where):
    # Stored as JSON text (its dotted keys are not valid field names); shown as compact JSON, {} as none.
    if isinstance(where, str):
        try:
            where = json.loads(where)
        except ValueError:
            return where
    return json.dumps(where, separators=(", ", ": "), sort_keys=True) if where else ""


def queue_events(limit=20):
    """Return the newest queue events (queued, granted, cancelled, timed_out), newest first.

    They are history entries of resource "reservations"; selecting the newest sorts all of them on
    an engine that sorts in memory, so each process keeps them for DASHBOARD_CACHE_SECONDS.
    """
    entries = database()[history.COLLECTION]

    def compute():
        cursor = entries.find({"resource": "reservations"}, {"_id": 0, "item_id": 0})
        return list(cursor.sort([("at", pymongo.DESCENDING)]).limit(limit))

    max_age = float(current_app.config.get("DASHBOARD_CACHE_SECONDS", queries.DEFAULT_CACHE_SECONDS))
    if max_age <= 0:
        return compute(), 0.0
    return queries.cached(entries, ("queue-events", limit), compute, max_age)


def current_reservation(machine):
    """Return the active reservation holding `machine` (a document), or None."""
    if not machine.get("reservation"):
        return None
    found = database()[RESERVATIONS].find_one({"_id": machine["reservation"]})
    return found if found and found.get("state") == "active" else None


def pools():
    """Return the address pools with their utilisation."""
    return [pool_routes.render(pool) for pool in database()[POOLS].find().sort("name", pymongo.ASCENDING)]


def machine_history(machine, limit=50, reservations=5):
    """Return the machine's history, newest first, with the queue events of its latest reservations.

    A machine granted from the queue shows when its reservation was queued, granted (and
    cancelled or timed out, for the others): each of the `reservations` newest reservations named
    in its entries adds its own entries (by name, the history's indexed key), marked `reservation`.
    """
    db = database()
    query = {"resource": "machines", "name": machine["hostname"]}
    entries = list(db[history.COLLECTION].find(query).sort([("at", pymongo.DESCENDING), ("_id", -1)]).limit(limit))
    rids = []
    for entry in entries:
        change = (entry.get("changes") or {}).get("reservation") or {}
        rid = change.get("after") or change.get("before")
        if isinstance(rid, str) and rid not in rids:
            rids.append(rid)
    for rid in rids[:reservations]:
        for event in db[history.COLLECTION].find({"resource": "reservations", "name": rid}).limit(limit):
            event["reservation"] = rid
            entries.append(event)
    entries.sort(key=lambda e: (e["at"], e["_id"]), reverse=True)
    return entries[:limit]


def release(reservation_id, username):
    """Release a reservation, or cancel it while it waits in line (ending.release_or_cancel, as the API does).

    Returns the Outcome (state, released hostnames), or None if there is no such reservation. Either
    way the queue gets a granting pass (what was freed, or earmarked for the cancelled request, may go
    to the next in line). Raises core.errors.AllocationError when it cannot be done now (503).
    """
    res = database()[RESERVATIONS].find_one({"_id": reservation_id}, {"state": 1})
    reason = CANCEL_REASON if res is not None and res["state"] == "queued" else RELEASE_REASON
    outcome = ending.release_or_cancel(core(), reservation_id, Actor(username, reason))
    if outcome is not None and outcome.ended:
        kick()
    return outcome
