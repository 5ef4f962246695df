"""Webhooks: hooks, and their deliveries made at least once by whichever server process gets there first.

A hook is a document with its own `cursor`: the last event id it was given. Fanning out (any
process, any number at once) reads the events after the lowest cursor and inserts one delivery
per matching event and hook, `_id` "<hook>:<event id>": a second process inserting the same
delivery is refused by the unique `_id`, so each is made once. Then each hook's cursor is raised
($max). Deliveries are claimed by a conditional write (pending -> delivering, with a claim token
and a lease); the outcome is written only by the holder of that claim.

Crash order: a crash after deliveries are inserted and before the cursor is raised leaves them
to be inserted again (refused: done). A crash while delivering leaves a delivery `delivering`
whose lease runs out; `reclaim` puts it back to pending and it is sent again: at least once.
A receiver may see an event twice (rarely): X-RM-Delivery names the delivery so it can tell.
"""

import datetime
import json
import secrets
import uuid

import mongoquery
from pymongo.errors import BulkWriteError

from . import events

HOOKS = "webhooks"
DELIVERIES = "webhook_deliveries"
STATES = ("pending", "delivering", "delivered", "failed")
LOG_LENGTH = 10  # attempts kept in a delivery's log
DELIVERY_KEEP = datetime.timedelta(days=7)  # finished deliveries are kept this long
PUBLIC_FIELDS = ("_id", "url", "events", "where", "description", "created", "created_by", "cursor")
# A hook's `where` may use these operators only: nothing that runs code or matches text by pattern.
WHERE_OPERATORS = frozenset(("$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "$exists", "$and", "$or",
                             "$nor", "$not", "$all", "$size", "$elemMatch"))


class Policy:
    """How deliveries are retried: base * 2**(attempt-1) seconds, at most `cap`, `attempts` tries in all."""

    def __init__(self, base=10.0, cap=3600.0, attempts=12, lease=60.0):
        self.base, self.cap, self.attempts, self.lease = float(base), float(cap), int(attempts), float(lease)

    def delay(self, attempt):
        """Return the seconds to wait after failed attempt number `attempt` (1, 2, ...)."""
        return min(self.cap, self.base * 2 ** max(0, attempt - 1))


def check_where(where):
    """Return why a hook's `where` cannot be used, or None: a filter on the event (type, data.*)."""
    if where is None:
        return None
    if not isinstance(where, dict):
        return "must be an object: a MongoDB filter on the event, e.g. {\"data.state\": \"active\"}"
    bad = _operators(where) - WHERE_OPERATORS
    if bad:
        return f"operator {sorted(bad)[0]} is not allowed; use {', '.join(sorted(WHERE_OPERATORS))}"
    try:
        mongoquery.Query(where).match({"type": "machine.updated", "data": {}})
    except (mongoquery.QueryError, TypeError, ValueError) as e:
        return f"is not a filter: {e}"
    return None


def _operators(node):
    found = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if key.startswith("$"):
                found.add(key)
            found |= _operators(value)
    elif isinstance(node, list):
        for value in node:
            found |= _operators(value)
    return found


def wants(hook, kind, data):
    """Return whether `hook` takes an event of type `kind` with `data` (its patterns, then its where)."""
    patterns = hook.get("events") or ["*"]
    if "*" not in patterns and kind not in patterns and not any(
            p.endswith(".*") and kind.startswith(p[:-1]) for p in patterns):
        return False
    where = json.loads(hook["where"]) if hook.get("where") else None
    return not where or mongoquery.Query(where).match({"type": kind, "data": data})


# -- hooks ----------------------------------------------------------------------------------

def create(db, url, patterns, where, description, user, now):
    """Store a hook that gets the events from now on; return (hook, secret). The secret is not shown again."""
    secret = "whsec_" + secrets.token_hex(24)
    hook = {"_id": "wh_" + secrets.token_hex(8), "url": url, "events": list(patterns),
            "where": json.dumps(where, sort_keys=True) if where else None, "description": description,
            "secret": secret, "created": now, "created_by": user, "cursor": events.top(db)}
    db[HOOKS].insert_one(hook)
    return hook, secret


def listing(db):
    """Return every hook, oldest first."""
    return sorted(db[HOOKS].find({}), key=lambda h: (h.get("created"), h["_id"]))


def get(db, hook_id):
    """Return the hook, or None."""
    return db[HOOKS].find_one({"_id": str(hook_id)})


def delete(db, hook_id):
    """Delete a hook and its deliveries; return whether it existed."""
    if not db[HOOKS].delete_one({"_id": str(hook_id)}).deleted_count:
        return False
    db[DELIVERIES].delete_many({"hook": str(hook_id)})
    return True


# -- fanning events out into deliveries ---------------------------------------------------

def fan_out(db, render, now, batch=4 * events.PAGE):
    """Make the deliveries of the events after the hooks' cursors; return how many events were read.

    `render(event document)` returns (type, data): what a receiver gets. Events dropped by retention
    before a hook was given them are counted on the hook (`lost`), and skipped.
    """
    hooks = list(db[HOOKS].find({}))
    if not hooks:
        return 0
    low = min(int(h.get("cursor") or 0) for h in hooks)
    floor = events.floor(db)
    if low + 1 < floor:
        for hook in hooks:
            behind = floor - 1 - int(hook.get("cursor") or 0)
            if behind > 0 and db[HOOKS].update_one({"_id": hook["_id"], "cursor": hook.get("cursor")},
                                                   {"$set": {"cursor": floor - 1}, "$inc": {"lost": behind}}
                                                   ).matched_count:
                hook["cursor"] = floor - 1
        low = floor - 1
    docs = events.read(db, low, batch)
    if not docs:
        return 0
    rendered = [(doc["_id"], *render(doc)) for doc in docs]
    for hook in hooks:
        cursor = int(hook.get("cursor") or 0)
        fresh = [_delivery(hook, event_id, kind, data, now) for event_id, kind, data in rendered
                 if event_id > cursor and wants(hook, kind, data)]
        _insert_new(db[DELIVERIES], fresh)
        db[HOOKS].update_one({"_id": hook["_id"]}, {"$max": {"cursor": docs[-1]["_id"]}})
    return len(docs)


def _delivery(hook, event_id, kind, data, now):
    body = json.dumps({"id": event_id, "type": kind, "data": data}, separators=(",", ":"), sort_keys=True)
    return {"_id": f"{hook['_id']}:{event_id}", "hook": hook["_id"], "event": event_id, "type": kind, "body": body,
            "state": "pending", "attempts": 0, "next_at": now, "created": now, "claim": None, "log": []}


def _insert_new(collection, docs):
    if not docs:
        return
    try:
        collection.insert_many(docs, ordered=False)
    except BulkWriteError as e:  # made already by another process: each is made once
        if any(error.get("code") != events.DUPLICATE for error in e.details.get("writeErrors") or []):
            raise


# -- delivering ---------------------------------------------------------------------------

def due(db, now, limit):
    """Return up to `limit` deliveries to try now, the longest waiting first."""
    if limit <= 0:
        return []
    found = db[DELIVERIES].find({"state": "pending", "next_at": {"$lte": now}}).sort("next_at", 1).limit(limit)
    return list(found)


def reclaim(db, now):
    """Put back to pending the deliveries whose holder's lease ran out (it died); return how many."""
    count = 0
    for doc in db[DELIVERIES].find({"state": "delivering", "lease_until": {"$lt": now}}, {"claim": 1}):
        count += db[DELIVERIES].update_one({"_id": doc["_id"], "state": "delivering", "claim": doc.get("claim")},
                                           {"$set": {"state": "pending", "claim": None, "next_at": now}}
                                           ).modified_count
    return count


def claim(db, delivery, now, policy, worker=None):
    """Take a due delivery for ourselves (`worker`: who, e.g. host:pid); return the claim token, or None."""
    token = uuid.uuid4().hex
    result = db[DELIVERIES].update_one(
        {"_id": delivery["_id"], "state": "pending", "claim": delivery.get("claim"), "attempts": delivery["attempts"]},
        {"$set": {"state": "delivering", "claim": token, "worker": worker,
                  "lease_until": now + datetime.timedelta(seconds=policy.lease)}})
    return token if result.modified_count else None


def finish(db, delivery, token, outcome, now, policy):
    """Record an attempt's outcome {ok, status, error, ms}: delivered, failed for good, or retried later.

    Returns the new state, or None when our claim was lost (the lease ran out and another took it).
    """
    attempts = delivery["attempts"] + 1
    entry = {"at": now, "status": outcome.get("status"), "error": outcome.get("error"), "ms": outcome.get("ms")}
    fields = {"attempts": attempts, "claim": None, "log": (delivery.get("log") or [])[-(LOG_LENGTH - 1):] + [entry],
              "last_status": outcome.get("status"), "last_error": outcome.get("error")}
    if outcome.get("ok"):
        fields.update(state="delivered", delivered_at=now)
    elif attempts >= policy.attempts:
        fields.update(state="failed")
    else:
        fields.update(state="pending", next_at=now + datetime.timedelta(seconds=policy.delay(attempts)))
    result = db[DELIVERIES].update_one({"_id": delivery["_id"], "state": "delivering", "claim": token},
                                       {"$set": fields})
    return fields["state"] if result.modified_count else None


def deliveries(db, hook_id, state=None, limit=100):
    """Return a hook's deliveries, newest event first."""
    query = {"hook": str(hook_id)}
    if state:
        query["state"] = state
    return list(db[DELIVERIES].find(query, {"body": 0}).sort("event", -1).limit(limit))


def redeliver(db, hook_id, delivery_id, now):
    """Send a delivery again now, with a fresh count of attempts; return it, or None. Raises Busy while it is sent."""
    query = {"_id": str(delivery_id), "hook": str(hook_id)}
    doc = db[DELIVERIES].find_one(query, {"body": 0})
    if doc is None:
        return None
    if doc["state"] == "delivering":
        raise Busy(f"delivery {delivery_id} is being sent right now")
    fields = {"state": "pending", "next_at": now, "attempts": 0, "claim": None}
    if not db[DELIVERIES].update_one(dict(query, state=doc["state"], claim=doc.get("claim")),
                                     {"$set": fields}).modified_count:
        raise Busy(f"delivery {delivery_id} changed meanwhile; retry")
    return dict(doc, **fields)


class Busy(Exception):
    """The delivery is being sent (or changed) right now."""


def prune(db, now):
    """Drop finished deliveries older than DELIVERY_KEEP; return how many."""
    cutoff = now - DELIVERY_KEEP
    dropped = 0
    for state in ("delivered", "failed"):
        dropped += db[DELIVERIES].delete_many({"state": state, "created": {"$lt": cutoff}}).deleted_count
    return dropped


def unknown_hook(db, delivery):
    """Drop a delivery whose hook was deleted meanwhile; return whether it was one."""
    if db[HOOKS].find_one({"_id": delivery["hook"]}, {"_id": 1}) is not None:
        return False
    db[DELIVERIES].delete_one({"_id": delivery["_id"]})
    return True

