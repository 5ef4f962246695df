"""A per-pool bitmap of claimed addresses: where to look first, never who gets what.

Finding a pool's claimed addresses by range query scans every address claim
on FerretDB (only `{_id: value}` uses an index there). So each pool up to
MAX_HINT_ADDRESSES keeps a bitmap, read by `_id`, of the addresses it last
knew to be claimed. The hint may be stale either way (its updates race):
a bit wrongly clear costs one failed claim insert (then the bit is set); a bit
wrongly set hides a free address until the hint is rebuilt from the claims,
which happens before any 409 and at every sweep. Exclusivity still comes
from the claims alone.
"""

from bson import Binary
from pymongo.errors import DuplicateKeyError

from .ipranges import from_key, key_bounds, stored_ranges
from .store import ADDRESS_CLAIMS, POOLS

HINTS = "pool_hints"
MAX_HINT_ADDRESSES = 1 << 18  # 32 KiB of bitmap; larger pools query the claims each time


def usable(network):
    """Return whether a pool is small enough to keep a hint."""
    return network.num_addresses <= MAX_HINT_ADDRESSES


def load(db, pool, network):
    """Return the sorted integer addresses the hint marks claimed, or None without a hint."""
    if not usable(network):
        return None
    doc = db[HINTS].find_one({"_id": pool["_id"]})
    if doc is None:
        return None
    base, bits = int(network.network_address), bytes(doc["bits"])
    taken = []
    for index, byte in enumerate(bits):
        if byte:
            taken.extend(base + index * 8 + bit for bit in range(8) if byte >> bit & 1)
    return taken


def save(db, pool, network, taken):
    """Store the hint of a pool as the set of integer addresses `taken`."""
    if not usable(network):
        return
    base = int(network.network_address)
    bits = bytearray((network.num_addresses + 7) // 8)
    for n in taken:
        offset = n - base
        if 0 <= offset < network.num_addresses:
            bits[offset // 8] |= 1 << (offset % 8)
    doc = {"bits": Binary(bytes(bits))}
    try:
        db[HINTS].replace_one({"_id": pool["_id"]}, doc, upsert=True)
    except DuplicateKeyError:
        # Two first writers raced to create it; it exists now (last writer wins, as ever for a hint).
        db[HINTS].replace_one({"_id": pool["_id"]}, doc)


def mark(db, pool, network, claimed=(), released=()):
    """Set the bits of `claimed` and clear those of `released` in a pool's hint."""
    if not usable(network):
        return
    taken = load(db, pool, network)
    if taken is None:
        return  # built from the claims on next use
    current = set(taken) | set(claimed)
    current.difference_update(released)
    save(db, pool, network, sorted(current))


def released(db, kind, number):
    """Clear an address (integer) in the hints of the pools of `kind` that hold it."""
    for pool in db[POOLS].find({"kind": kind}):
        network = stored_ranges(pool)[0]
        if usable(network) and int(network.network_address) <= number <= int(network.broadcast_address):
            mark(db, pool, network, released=[number])


def rebuild(db, pool, network):
    """Recompute a pool's hint from its claims; return the claimed integer addresses."""
    taken = taken_numbers(db, pool["kind"], network)
    save(db, pool, network, taken)
    return taken


def forget(db, pool):
    """Drop a pool's hint (the pool is gone)."""
    db[HINTS].delete_one({"_id": pool["_id"]})


def taken_numbers(db, kind, network):
    """Return the sorted integer addresses of `network` that hold a claim (a range read of the claims)."""
    low, high = key_bounds(network)
    cursor = db[ADDRESS_CLAIMS].find({"kind": kind, "ipkey": {"$gte": low, "$lte": high}}, {"ipkey": 1, "_id": 0})
    return sorted(from_key(c["ipkey"]) for c in cursor)
