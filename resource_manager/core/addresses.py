"""Allocating addresses from pools: lowest free first, all or nothing, on address claims.

An address is allocated while its claim exists (claims.claim_address); the claim is taken
before the address document gets its owner and dropped after the owner goes (the API's
guards do the same for plain writes through Eve). An allocation is a pending request first
(pending.py: the Idempotency-Key protocol reservations use too), then `done`:

    open (pending) -> claim the lowest free addresses -> give each its owner -> done (if still pending)
"""

import ipaddress

from bson import ObjectId
from pymongo.errors import DuplicateKeyError

from . import counts, history, pending, pool_hints
from .claims import address_claim_id, claim_address, drop_address_claim, stamp
from .constraints import fingerprint
from .context import Actor
from .errors import AllocationError, Shortfall
from .etag import etag
from .ipranges import count_usable, free_addresses, ipkey, size, stored_ranges
from .pending import NOT_ENDING
from .pool_hints import taken_numbers
from .store import ADDRESS_CLAIMS, ALLOCATIONS, POOLS


def resource_of(kind):
    """Return the Eve resource holding addresses of kind public/private."""
    return f"{kind}-addresses"


def collection_of(kind):
    """Return the collection holding addresses of kind public/private."""
    return f"{kind}_addresses"


def pool_ranges(pool):
    """Return (network, excluded ranges) of a stored pool (stored merged: nothing is re-parsed)."""
    return stored_ranges(pool)


def utilisation(db, pool):
    """Return {"size", "allocated", "free"} of a pool (excluded addresses count in none)."""
    network, excluded = pool_ranges(pool)
    total = size(network, excluded)
    allocated = counts.pool_allocated(db, pool)
    if allocated is None:
        allocated = count_usable(taken_numbers(db, pool["kind"], network), excluded)
    return {"size": total, "allocated": allocated, "free": total - allocated}


def allocate(core, pool, req, user, key=None):
    """Allocate req["count"] addresses of `pool` to req["owner"]; return (allocation, replayed).

    Raises Shortfall (nothing allocated) or AllocationError.
    """
    aid = pending.request_id("alloc-", user, key)
    fp = fingerprint(dict(req, pool=pool["name"]))

    def make():
        return {"_id": aid, "state": "pending", "pool": pool["name"], "kind": pool["kind"], "owner": req["owner"],
                "count": req["count"], "user": user, "fingerprint": fp, "addresses": [], "_created": core.now()}

    alloc, replayed = pending.open_request(core, ALLOCATIONS, make, fp)
    if replayed:
        return alloc, True
    return _fill(core, pool, alloc, req), False


def _fill(core, pool, alloc, req):
    """Claim the lowest free addresses, then give them their owner; undo all on any failure."""
    db = core.db
    kind, count = pool["kind"], req["count"]
    network, excluded = pool_ranges(pool)
    known = pool_hints.load(db, pool, network)
    rebuilt = known is None
    if known is None:
        known = pool_hints.rebuild(db, pool, network) if pool_hints.usable(network) else \
            taken_numbers(db, kind, network)
    candidates = free_addresses(network, excluded, known)
    deadline = core.clock.monotonic() + core.policy.grace_seconds / 2
    claimed, taken, busy = [], [], []
    try:
        while len(taken) < count:
            for ip in candidates:
                address, doc_id = str(ip), ObjectId()
                if claim_address(core, kind, address, alloc["_id"], doc_id, ipkey(address)):
                    claimed.append((address, doc_id))
                    if len(taken) + len(claimed) == count:
                        break
                else:
                    busy.append(int(ip))  # the hint was stale here
            if len(taken) + len(claimed) < count:
                if not rebuilt:
                    # Never answer 409 on a hint's word: look at the claims themselves once.
                    rebuilt = True
                    candidates = free_addresses(network, excluded, pool_hints.rebuild(db, pool, network))
                    continue
                raise Shortfall(count, len(taken) + len(claimed))
            if core.clock.monotonic() > deadline:
                raise AllocationError("allocation took too long; nothing allocated, retry", 503)
            for address, doc_id in claimed:
                entry = _take_address(core, kind, address, doc_id, alloc, req)
                if entry is not None:
                    taken.append(entry)
            claimed = []
        addresses = [address for address, _doc_id, _created in taken]
        pool_hints.mark(db, pool, network, claimed=[int(ipaddress.ip_address(a)) for a in addresses] + busy)
        result = db[ALLOCATIONS].update_one({"_id": alloc["_id"], "state": "pending", "ending": NOT_ENDING},
                                            {"$set": {"state": "done", "addresses": addresses}})
        if result.matched_count != 1:
            raise AllocationError("allocation was repaired by a sweep while being made; retry", 503)
        return dict(alloc, state="done", addresses=addresses)
    except BaseException:
        undo(core, alloc, [(a, d, None) for a, d in claimed] + taken)
        raise


def _take_address(core, kind, address, doc_id, alloc, req):
    """Create (or give an owner to) the address we hold the claim of; return (address, _id, created)."""
    db = core.db
    coll = db[collection_of(kind)]
    now = core.now()
    actor = Actor(alloc["user"], req["reason"])
    doc = {"_id": doc_id, "address": address, "owner": req["owner"], "tags": req["tags"],
           "_created": now, "_updated": now}
    doc["_etag"] = etag(doc)
    try:
        coll.insert_one(doc)
        history.record(db, resource_of(kind), doc, "allocate", history.diff({}, doc), actor, at=now)
        return address, doc_id, True
    except DuplicateKeyError:
        existing = coll.find_one({"address": address})
    claim_id = address_claim_id(kind, address)
    if existing is None:
        drop_address_claim(core, kind, address, holder=alloc["_id"])  # deleted meanwhile; next candidate
        return None
    if existing.get("owner"):
        # Owned but unclaimed (data imported around the API): our claim now guards it for its owner.
        db[ADDRESS_CLAIMS].update_one({"_id": claim_id}, {"$set": {"holder": "adopted", "doc": existing["_id"]}})
        return None
    # An owner-less document of an address we hold the claim of: ours to give an owner.
    db[ADDRESS_CLAIMS].update_one({"_id": claim_id}, {"$set": {"doc": existing["_id"]}})
    fields = {"owner": req["owner"]}
    result = coll.update_one({"_id": existing["_id"], "owner": None}, {"$set": stamp(existing, fields, now)})
    if result.matched_count != 1:
        drop_address_claim(core, kind, address, holder=alloc["_id"])
        return None
    after = dict(existing, **fields)
    history.record(db, resource_of(kind), after, "allocate", history.diff(existing, after), actor, at=now)
    return address, existing["_id"], False


def undo(core, alloc, entries=None):
    """Roll back a pending allocation: remove what it gave, drop its claims, delete it."""
    db = core.db
    kind, aid = alloc["kind"], alloc["_id"]
    actor = Actor(reason="allocation not completed")
    coll = db[collection_of(kind)]
    if entries is None:
        entries = [(c["_id"].split("/", 1)[1], c["doc"], None) for c in db[ADDRESS_CLAIMS].find({"holder": aid})]
    for address, doc_id, _created in entries:
        doc = coll.find_one({"_id": doc_id})
        if doc is not None and doc.get("owner") == alloc["owner"]:
            # Only the version we read: a write in between (its owner handed on by PATCH) wins.
            version = {"_id": doc_id, "_etag": doc.get("_etag")}
            if doc.get("_created") and doc["_created"] >= alloc["_created"]:
                if coll.delete_one(version).deleted_count:
                    history.record(db, resource_of(kind), doc, "release", history.diff(doc, {}), actor,
                                   at=core.now())
            else:
                now = core.now()
                if coll.update_one(version, {"$set": stamp(doc, {"owner": None}, now)}).matched_count:
                    after = dict(doc, owner=None)
                    history.record(db, resource_of(kind), after, "release", history.diff(doc, after), actor,
                                   at=now)
        drop_address_claim(core, kind, address, holder=aid)
    db[ALLOCATIONS].delete_one({"_id": aid, "state": "pending"})


def repair(core, cutoff):
    """Sweep the address side; return how many things were repaired.

    Undoes allocations pending since before `cutoff`, drops claims older than
    `cutoff` whose address has no owner, claims owned addresses that lack one,
    and rebuilds the pools' hints.
    """
    db, repaired = core.db, 0
    for alloc in list(db[ALLOCATIONS].find({"state": "pending", "_created": {"$lt": cutoff}})):
        if alloc.get("ending") or pending.take_over(core, ALLOCATIONS, alloc["_id"]):
            undo(core, alloc)
            repaired += 1
    unfinished = {a["_id"] for a in db[ALLOCATIONS].find({"state": "pending"}, {"_id": 1})}
    for kind in ("public", "private"):
        coll = db[collection_of(kind)]
        owned = {d["address"]: d["_id"] for d in coll.find({"owner": {"$nin": [None, ""]}}, {"address": 1})}
        claims = list(db[ADDRESS_CLAIMS].find({"kind": kind}))
        for claim in claims:
            address = claim["_id"].split("/", 1)[1]
            if address not in owned and claim["at"] < cutoff and claim["holder"] not in unfinished:
                drop_address_claim(core, kind, address, holder=claim["holder"])
                repaired += 1
        claimed = {c["_id"].split("/", 1)[1] for c in claims}
        for address, doc_id in owned.items():
            if address not in claimed and claim_address(core, kind, address, "adopted", doc_id, ipkey(address)):
                repaired += 1
    for pool in db[POOLS].find():
        network = pool_ranges(pool)[0]
        if pool_hints.usable(network):
            pool_hints.rebuild(db, pool, network)
    return repaired
