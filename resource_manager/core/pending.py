"""Pending requests: the one Idempotency-Key protocol, for reservations and address allocations alike.

A request is first inserted `pending`, under an `_id` derived from (user, Idempotency-Key) when a
key is given (a fresh ObjectId otherwise). Concurrent replays of one key collide at that insert
(atomic on every engine), wait for the first to settle, and answer what it became:

    insert pending --E11000--> wait until not pending --> gone: the first failed and was undone; insert again
                                                      --> other body (fingerprint): 422
                                                      --> ended (released, cancelled...): 409, never the old answer
                                                      --> otherwise: replayed as it stands

A crash leaves the document `pending`; the sweep takes it over (`take_over`, a conditional write,
so a slow request still alive cannot complete it afterwards) and undoes it after the grace period.
A request gives up by itself (503) after half of that period, so a live one is never taken for dead.
"""

import hashlib

from bson import ObjectId
from pymongo.errors import DuplicateKeyError

from .errors import AllocationError

POLL = 0.05  # s between looks at a request we wait for
NOT_ENDING = {"$exists": False}


def request_id(prefix, user, key):
    """Return the _id of a new request: derived from its Idempotency-Key if given."""
    if not key:
        return str(ObjectId())
    return prefix + hashlib.sha256(f"{user}\0{key}".encode()).hexdigest()[:32]


def open_request(core, collection, make, fingerprint, ended=()):
    """Insert the pending request `make()` builds (fresh each try), or find the one its key made.

    Returns (document, replayed). Raises AllocationError: 422 (the key was used for another
    request), 409 (the key's request has ended: its answer no longer holds), 503 (still in progress).
    """
    for _attempt in range(3):
        doc = make()
        try:
            core.db[collection].insert_one(doc)
            return doc, False
        except DuplicateKeyError:
            existing = await_settled(core, collection, doc["_id"])
        if existing is None:
            continue  # the first request failed and was undone: make it ourselves
        if existing.get("fingerprint") != fingerprint:
            raise AllocationError("this Idempotency-Key was used for a different request", 422) from None
        if existing.get("state") in ended:
            raise AllocationError(
                f"the request made with this Idempotency-Key ({existing['_id']}) has ended "
                f"({existing['state']}): its machines are no longer yours; use a new key to ask again", 409,
                reservation=existing["_id"], state=existing["state"]) from None
        return existing, True
    raise AllocationError("could not settle this Idempotency-Key; retry", 503)


def await_settled(core, collection, _id, wait=None):
    """Wait until a pending document settles; return it, or None once it is gone.

    Raises AllocationError 503 when it stays pending longer than `wait` (default: the policy's).
    """
    wait = core.policy.idempotency_wait if wait is None else wait
    deadline = core.clock.monotonic() + wait
    while True:
        doc = core.db[collection].find_one({"_id": _id})
        if doc is None or doc.get("state") != "pending":
            return doc
        if core.clock.monotonic() > deadline:
            # 503, not 409: the first request may yet succeed, and a client retrying with this key must retry.
            raise AllocationError(f"a request with this Idempotency-Key is still in progress ({_id}); retry later",
                                  503)
        core.clock.sleep(POLL)


def take_over(core, collection, _id):
    """Mark a pending request as being undone by us (the sweep); return whether we won it."""
    result = core.db[collection].update_one({"_id": _id, "state": "pending", "ending": NOT_ENDING},
                                            {"$set": {"ending": "undone", "_updated": core.now()}})
    return result.matched_count == 1
