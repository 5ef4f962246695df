"""Eve hooks that keep plain writes from going behind the allocator's back.

Machines: while a machine's claim exists, a write through Eve may not change
its hostname, state, owner or job_id, nor delete it (409 naming the
reservation): release the reservation instead. The check and the write are
one decision: Eve writes only the version it checked (`{_id, _etag}`, atomic
on every engine), and the allocator changes a machine's _etag when it takes
it, so a reservation landing in between turns the write into a 412.
Addresses: an address with an owner always holds its claim. A write through
Eve that gives an address an owner takes the claim first (409 if another
holds it); one that takes the owner away, or deletes the address, drops it.
"""

import ipaddress

from bson import ObjectId
from flask import abort, g

from ..core import pool_hints
from ..core.claims import claim_address, drop_address_claim
from ..core.ipranges import ipkey
from ..core.store import MACHINE_CLAIMS, RESERVATIONS
from .db import core, database
from .eveglue import on

GUARDED_FIELDS = ("hostname", "state", "owner", "job_id")


def _holding_reservation(original):
    db = database()
    claim = db[MACHINE_CLAIMS].find_one({"_id": original.get("_id")})
    if claim is None:
        return None
    res = db[RESERVATIONS].find_one({"_id": claim["holder"]}, {"owner": 1, "job_id": 1, "state": 1}) or {}
    return {"_id": claim["holder"], "owner": res.get("owner"), "job_id": res.get("job_id"),
            "state": res.get("state", "gone")}


def _refuse(original, res, doing):
    abort(409, description=(
        f"machine {original.get('hostname')} is held by reservation {res['_id']} "
        f"(owner {res['owner']}, job {res['job_id']}, {res['state']}); release it before you {doing}"))


def _check_machine_write(after, original, doing):
    changed = [f for f in GUARDED_FIELDS if after.get(f, original.get(f)) != original.get(f)]
    if not changed:
        return
    res = _holding_reservation(original)
    if res is not None:
        _refuse(original, res, f"change {', '.join(changed)}")


def _machine_update(updates, original):
    _check_machine_write(updates, original, "change it")


def _machine_replace(document, original):
    full = {f: document.get(f) for f in GUARDED_FIELDS}
    _check_machine_write(full, original, "change it")
    # PUT replaces the whole document; the reservation link is not the client's to drop.
    if original.get("reservation") is not None:
        document["reservation"] = original["reservation"]


def _machine_delete(original):
    res = _holding_reservation(original)
    if res is not None:
        _refuse(original, res, "delete it")


def _address_hooks(kind):
    def take(address, doc_id):
        if not claim_address(core(), kind, address, "manual", doc_id, ipkey(address)):
            abort(409, description=f"address {address} is allocated; release it first")
        # Dropped again by _drop_on_failure if the write does not go through.
        g.setdefault("rm_taken_claims", []).append((kind, address, doc_id))

    def take_all(pairs):
        for address, doc_id in pairs:
            take(address, doc_id)

    def insert(documents):
        pairs = []
        for doc in documents:
            if doc.get("owner"):
                doc.setdefault("_id", ObjectId())
                pairs.append((doc["address"], doc["_id"]))
        take_all(pairs)

    def needs_claim(after, original):
        return bool(after.get("owner")) and (not original.get("owner") or after["address"] != original["address"])

    def drops_claim(after, original):
        return bool(original.get("owner")) and (not after.get("owner") or after["address"] != original["address"])

    def update(updates, original):
        after = dict(original, **updates)
        if needs_claim(after, original):
            take_all([(after["address"], original["_id"])])

    def drop(address, doc_id):
        drop_address_claim(core(), kind, address, doc=doc_id)
        pool_hints.released(database(), kind, int(ipaddress.ip_address(address)))

    def updated(updates, original):
        after = dict(original, **updates)
        if drops_claim(after, original):
            drop(original["address"], original["_id"])

    def replace(document, original):
        if needs_claim(document, original):
            take_all([(document["address"], original["_id"])])

    def replaced(document, original):
        if drops_claim(document, original):
            drop(original["address"], original["_id"])

    def deleted(original):
        if original.get("owner"):
            drop(original["address"], original["_id"])

    return {"insert": insert, "update": update, "updated": updated, "replace": replace,
            "replaced": replaced, "deleted_item": deleted}


def _drop_on_failure(response):
    if response.status_code >= 400:
        for kind, address, doc_id in g.pop("rm_taken_claims", []):
            drop_address_claim(core(), kind, address, doc=doc_id)
    return response


def init_app(app):
    """Register the guards on machines and addresses."""
    for event, fn in (("update", _machine_update), ("replace", _machine_replace), ("delete_item", _machine_delete)):
        on(app, event, fn, "machines")
    for kind in ("public", "private"):
        for event, fn in _address_hooks(kind).items():
            on(app, event, fn, f"{kind}-addresses")
    app.after_request(_drop_on_failure)
