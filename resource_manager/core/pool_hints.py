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

import re

from bson import Binary
from pymongo.errors import DuplicateKeyError

from .ipranges import Runs, from_key, key_bounds, stored_ranges
from .store import ADDRESS_CLAIMS, POOLS

HINTS = "pool_hints"
MAX_HINT_ADDRESSES = 1 << 18  # 32 KiB of bitmap; larger pools query the claims each time
_SET_BYTES = re.compile(rb"\xff+|[^\x00\xff]")  # runs of full bytes, or one partly set byte


def usable(network):
    """Return whether a pool is small enough to keep a hint."""
    return network.num_addresses <= MAX_HINT_ADDRESSES


def load(db, pool, network):
    """Return the addresses the hint marks claimed (ipranges.Runs), or None without a hint."""
    bits = _bits(db, pool, network)
    return None if bits is None else Runs(_runs(bits, int(network.network_address)))


def _bits(db, pool, network):
    if not usable(network):
        return None
    doc = db[HINTS].find_one({"_id": pool["_id"]})
    return None if doc is None else bytearray(doc["bits"])


def _runs(bits, base):
    # Runs of whole 0xff bytes in one step each: a crowded /16 is a few runs, not 65,536 bits.
    runs = []
    for found in _SET_BYTES.finditer(bits):
        start, end = found.span()
        if bits[start] == 0xFF:
            _add(runs, base + start * 8, base + end * 8 - 1)
        else:
            byte = bits[start]
            for bit in range(8):
                if byte >> bit & 1:
                    _add(runs, base + start * 8 + bit, base + start * 8 + bit)
    return runs


def _add(runs, first, last):
    if runs and first <= runs[-1][1] + 1:
        runs[-1] = (runs[-1][0], last)
    else:
        runs.append((first, last))


def _set(bits, network, numbers, value):
    base, size = int(network.network_address), network.num_addresses
    for n in numbers:
        offset = n - base
        if 0 <= offset < size:
            if value:
                bits[offset // 8] |= 1 << (offset % 8)
            else:
                bits[offset // 8] &= ~(1 << (offset % 8)) & 0xFF


def _store(db, pool, bits):
    doc = {"bits": Binary(bytes(bits))}
    try:
        db[HINTS].replace_one({"_id": pool["_id"]}, doc, upsert=True)
    except DuplicateKeyError:
        # Two first writers raced to create it; it exists now (last writer wins, as ever for a hint).
        db[HINTS].replace_one({"_id": pool["_id"]}, doc)


def save(db, pool, network, taken):
    """Store the hint of a pool as the set of integer addresses `taken`."""
    if not usable(network):
        return
    bits = bytearray((network.num_addresses + 7) // 8)
    _set(bits, network, taken, True)
    _store(db, pool, bits)


def mark(db, pool, network, claimed=(), released=()):
    """Set the bits of `claimed` and clear those of `released` in a pool's hint."""
    bits = _bits(db, pool, network)
    if bits is None:
        return  # built from the claims on next use
    _set(bits, network, claimed, True)
    _set(bits, network, released, False)
    _store(db, pool, bits)


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
