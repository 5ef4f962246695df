"""Counts kept beside the data, so that no hot path counts or sorts the fleet.

On the embedded engine (FerretDB) a count, a sort or a range read decodes every document in Go:
seconds at 100,000 machines. So the `counts` collection keeps what the hot paths ask for:

- `machines`: `total` and `states` (machines per state; a state outside the schema counts as
  `other`): a listing's `_meta.total` for all machines or one state, the dashboard's cards;
- `head`: the machines of lowest hostname (`head: [{h, i}]`, at most HEAD_SIZE, in the natural
  order the dashboard sorts by, n2 before n10: schema.natural_key): every machine whose hostname
  is <= `upto` in that order (every machine when `upto` is None, none when ""): the dashboard's
  first pages. Its own document, so that a change of state rewrites a few numbers;
- `pool:<pool _id>`: `allocated`, the pool's claimed addresses outside its exclusions.

Each document also has `seq` (bumped by every change of it), `rc` (by every recount) and `exact`.
Readers use a document only when `exact`.

**Kept in the same step as the change.** Every write that changes a machine's existence, state
or hostname, or an address claim, goes through this module (`update_machine`, `machine_written`,
`insert_address_claim`, `delete_address_claim`), which makes the write and the counter's change
under one hold of the database's write lock (atomic.py `locked()`). On FerretDB that lock
serialises every conditional write and these inserts, so nobody makes a change between the two,
and a counter never loses an `$inc` (FerretDB's `$inc` is itself read-then-write). On MongoDB
there is no lock: each write is atomic by itself and the pair is not; a crash between the two
leaves a drift of that one change, which rm-check reports and the sweep repairs.

**Recounting** (`recount`: the sweep, rm-check, a server's start and the first tick after an
outage, the tests' seeding), without stopping writers. Under one hold of the lock it reads the
counters and opens one cursor over the machines and one over the claims; on FerretDB over
PostgreSQL each cursor is one SQL statement, which reads one snapshot, taken then: the counts it
finds are those of the counters read in that hold. It streams the rest without the lock, and
corrects each counter by the difference with an `$inc` conditional on `rc` (two recounts never
both apply). The head is replaced only if it did not change in between (`seq`), else at the next
recount. On MongoDB a cursor is no snapshot: the counters are read again after the pass, which
counts only if no `seq` moved (else it is tried again, and gives up after ATTEMPTS).

Crash order: a crash (or the database going away) between a write and its counter leaves that one
change uncounted (the upkeep recounts after an outage); a crash during a recount leaves its
correction applied whole or not at all (one conditional write per counter). Writes around the
API (a raw driver) are never counted: recount after them (`rm-sweep`).
"""

import contextlib
import ipaddress
import itertools
import logging

from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from ..schema import MACHINE_STATES, natural_key
from .atomic import NO_LOCK
from .ipranges import stored_ranges
from .store import ADDRESS_CLAIMS, COUNTS, MACHINES, POOLS

log = logging.getLogger(__name__)

MACHINES_KEY, HEAD_KEY = "machines", "head"
HEAD_SIZE = 500  # the dashboard's first pages in hostname order (10 pages of 50)
HEAD_LOW = 200  # below this many (and more machines than that), the upkeep refills the head at start
FIELDS = {"hostname": 1, "state": 1}
ATTEMPTS = 3
WRITE_RETRIES = 100  # a head change on MongoDB retries while other writers move its seq


def held(db):
    """Return the database's write lock (a no-op where writes need none)."""
    # A bare pymongo Database (tests, tools) has no lock: its attributes are collections.
    return db.locked() if hasattr(type(db), "locked") else contextlib.nullcontext()


def _state(doc):
    state = doc.get("state")
    return state if state in MACHINE_STATES else "other"


# Writes: each changes a machine or a claim and its counter in one step.

def update_machine(db, query, fields):
    """`$set` fields on the machine matching `query` and count the change, in one step; return whether one matched."""
    with held(db):
        # No projection: FerretDB's findAndModify has none.
        before = db[MACHINES].find_one_and_update(query, {"$set": fields}, return_document=ReturnDocument.BEFORE)
        if before is None:
            return False
        machine_written(db, before, dict(before, **fields))
    return True


def machine_written(db, before, after):
    """Count a machine's change from `before` to `after` (None: absent); call under `held(db)`, after the write."""
    machines_written(db, [before] if before is not None else [], [after] if after is not None else [])


def machines_written(db, removed, added):
    """Count machines `removed` and `added` (a change is one of each); call under `held(db)`, after the write."""
    inc = {}
    for doc, sign in [(d, -1) for d in removed] + [(d, 1) for d in added]:
        for key in ("total", f"states.{_state(doc)}"):
            inc[key] = inc.get(key, 0) + sign
    inc = {key: n for key, n in inc.items() if n}
    if inc:
        db[COUNTS].update_one({"_id": MACHINES_KEY}, {"$inc": dict(inc, seq=1)})
    if {d.get("hostname") for d in removed} ^ {d.get("hostname") for d in added}:  # came, went or renamed
        _change_head(db, {d["_id"] for d in removed}, added)


def _change_head(db, gone, added):
    for _attempt in range(WRITE_RETRIES):  # on FerretDB (held) the first try matches
        doc = db[COUNTS].find_one({"_id": HEAD_KEY})
        if doc is None:
            return  # never counted: a recount will
        head, upto = _new_head(doc.get("head") or [], doc.get("upto", ""), gone, added)
        result = db[COUNTS].update_one({"_id": HEAD_KEY, "seq": doc.get("seq")},
                                       {"$inc": {"seq": 1}, "$set": {"head": head, "upto": upto}})
        if result.matched_count:
            return
    db[COUNTS].update_one({"_id": HEAD_KEY}, {"$set": {"exact": False}, "$inc": {"seq": 1}})


def _new_head(head, upto, gone, added):
    kept = [e for e in head if e["i"] not in gone]
    bound = None if upto is None else natural_key(upto)
    kept += [{"h": d.get("hostname"), "i": d["_id"]} for d in added
             if isinstance(d.get("hostname"), str) and (bound is None or natural_key(d["hostname"]) <= bound)]
    kept.sort(key=lambda e: natural_key(e["h"]))
    if len(kept) > HEAD_SIZE:
        kept = kept[:HEAD_SIZE]
        upto = kept[-1]["h"]
    return kept, upto


def forget_machines(db):
    """Mark the machine counts unknown (a write this module could not follow); readers count until a recount."""
    for key in (MACHINES_KEY, HEAD_KEY):
        db[COUNTS].update_one({"_id": key}, {"$set": {"exact": False}, "$inc": {"seq": 1}})


def insert_address_claim(db, claim):
    """Insert an address claim and count it in its pool, in one step. Raises DuplicateKeyError."""
    with held(db):
        db[ADDRESS_CLAIMS].insert_one(claim)
        _pool_inc(db, claim["_id"], 1)


def delete_address_claim(db, query):
    """Delete the address claim matching `query` and uncount it, in one step; return whether one went."""
    with held(db):
        gone = db[ADDRESS_CLAIMS].find_one_and_delete(query)
        if gone is not None:
            _pool_inc(db, gone["_id"], -1)
    return gone is not None


def _claim_number(claim_id):
    kind, _, address = str(claim_id).partition("/")
    try:
        return kind, int(ipaddress.ip_address(address))
    except ValueError:
        return kind, None


def _pool_of(pools, kind, number):
    # Pools of one kind never overlap: at most one holds the address.
    for pool in pools:
        if pool.get("kind") != kind:
            continue
        network, excluded = stored_ranges(pool)
        if int(network.network_address) <= number <= int(network.broadcast_address):
            return None if any(a <= number <= b for a, b in excluded) else pool
    return None


def _pool_inc(db, claim_id, n):
    kind, number = _claim_number(claim_id)
    if number is None:
        return
    pool = _pool_of(db[POOLS].find({"kind": kind}, {"kind": 1, "cidr": 1, "exclude": 1, "ranges": 1}), kind, number)
    if pool is not None:
        db[COUNTS].update_one({"_id": pool_key(pool)}, {"$inc": {"allocated": n, "seq": 1}})


def pool_key(pool):
    """Return the `_id` of a pool's counter."""
    return f"pool:{pool['_id']}"


def add_pool(db, pool):
    """Insert a pool definition and count its claimed addresses. Raises DuplicateKeyError (a taken name)."""
    with contextlib.suppress(DuplicateKeyError):  # left by a pool of this _id that failed half-way
        db[COUNTS].insert_one(_placeholder(pool_key(pool)))
    db[POOLS].insert_one(pool)
    recount(db, only_pools=[pool])


def forget_pool(db, pool):
    """Drop a deleted pool's counter."""
    db[COUNTS].delete_one({"_id": pool_key(pool)})


# Reads: None means "not kept": count instead.

def machine_counts(db):
    """Return {"total", "states": {state: n}} as kept, or None when not exact."""
    doc = db[COUNTS].find_one({"_id": MACHINES_KEY})
    if doc is None or not doc.get("exact"):
        return None
    states = dict.fromkeys(MACHINE_STATES, 0)
    states.update({k: v for k, v in (doc.get("states") or {}).items() if k in states})
    return {"total": doc.get("total", 0), "states": states}


def machine_head(db):
    """Return (head, upto) as kept (head: [{"h", "i"}] by hostname; see the module doc), or None."""
    doc = db[COUNTS].find_one({"_id": HEAD_KEY})
    return (doc.get("head") or [], doc.get("upto", "")) if doc is not None and doc.get("exact") else None


def pool_allocated(db, pool):
    """Return how many of the pool's addresses are allocated, as kept, or None."""
    doc = db[COUNTS].find_one({"_id": pool_key(pool)}, {"allocated": 1, "exact": 1})
    return doc.get("allocated", 0) if doc is not None and doc.get("exact") else None


def needs_recount(db):
    """Return whether a counter is missing or not exact, or the head ran short."""
    wanted = {pool_key(p) for p in db[POOLS].find({}, {"_id": 1})} | {MACHINES_KEY, HEAD_KEY}
    kept = {d["_id"]: d for d in db[COUNTS].find({}, {"exact": 1, "total": 1, "upto": 1, "head.h": 1})}
    if any(key not in kept or not kept[key].get("exact") for key in wanted):
        return True
    head = kept[HEAD_KEY]
    return head.get("upto") is not None and len(head.get("head") or []) < min(kept[MACHINES_KEY].get("total", 0),
                                                                                HEAD_LOW)


# Recounting.

def _placeholder(key):
    empty = {MACHINES_KEY: {"total": 0, "states": {}}, HEAD_KEY: {"head": [], "upto": ""}}
    return {"_id": key, "seq": 0, "rc": 0, "exact": False, **empty.get(key, {"allocated": 0})}


def _snapshot_reads(db):
    # One SQL statement per cursor: FerretDB's storage reads one snapshot. Only with our writes serialised.
    if not hasattr(type(db), "locked") or db.locked() is NO_LOCK:
        return False
    return "ferretdbVersion" in db.client.admin.command("buildInfo")


def _tally(machines, claims, pools):
    found = {"total": 0, "states": {}}
    lowest = []
    for doc in machines:
        found["total"] += 1
        found["states"][_state(doc)] = found["states"].get(_state(doc), 0) + 1
        if isinstance(doc.get("hostname"), str):
            lowest.append((natural_key(doc["hostname"]), doc["hostname"], doc["_id"]))
            if len(lowest) > 4 * HEAD_SIZE:
                lowest = sorted(lowest)[:HEAD_SIZE + 1]
    lowest = sorted(lowest)[:HEAD_SIZE + 1]
    head = [{"h": h, "i": i} for _key, h, i in lowest[:HEAD_SIZE]]
    true = {MACHINES_KEY: found, HEAD_KEY: {"head": head, "upto": head[-1]["h"] if len(lowest) > HEAD_SIZE else None}}
    for pool in pools:
        true[pool_key(pool)] = {"allocated": 0}
    for claim in claims:
        kind, number = _claim_number(claim["_id"])
        pool = _pool_of(pools, kind, number) if number is not None else None
        if pool is not None:
            true[pool_key(pool)]["allocated"] += 1
    return true


def _numbers(doc, key):
    if key == MACHINES_KEY:
        return {"total": doc.get("total", 0), **{f"states.{s}": n for s, n in (doc.get("states") or {}).items()}}
    return {} if key == HEAD_KEY else {"allocated": doc.get("allocated", 0)}


def _differences(kept, true):
    """Return [(key, field, kept, counted)] for every counter of `kept` that differs from `true`."""
    found = []
    for key, counted in true.items():
        if key not in kept:
            continue
        have, want = _numbers(kept[key], key), _numbers(counted, key)
        for field in sorted(set(have) | set(want)):
            if have.get(field, 0) != want.get(field, 0):
                found.append((key, field, have.get(field, 0), want.get(field, 0)))
        if key == HEAD_KEY and not _valid_head(kept[key], counted):
            found.append((key, "head", _head_text(kept[key]), _head_text(counted)))
    return found


def _valid_head(kept, counted):
    # A shorter head is no drift (deletions shorten it): it must be a prefix of the order, with a bound that fits.
    head, want = kept.get("head") or [], counted["head"]
    if [(e["h"], e["i"]) for e in head] != [(e["h"], e["i"]) for e in want[:len(head)]]:
        return False
    if kept.get("upto") is None:
        return counted["upto"] is None and len(head) == len(want)
    return len(head) == len(want) or natural_key(want[len(head)]["h"]) > natural_key(kept["upto"])


def _head_text(doc):
    head = doc.get("head") or []
    return f"{len(head)} names up to {head[-1]['h'] if head else '-'}"


def recount(db, repair=True, only_pools=None):
    """Count machines and pools' claims; with `repair`, correct the counters (creating missing ones).

    `only_pools`: count these pools' claims only, not the machines. Returns the differences found
    before correcting, [{"counter", "field", "kept", "counted"}] (a counter not yet exact is not
    compared), or None when writes kept moving the counters (MongoDB).
    """
    pools = only_pools or list(db[POOLS].find({}, {"kind": 1, "cidr": 1, "exclude": 1, "ranges": 1}))
    keys = ([] if only_pools else [MACHINES_KEY, HEAD_KEY]) + [pool_key(p) for p in pools]
    if repair:
        have = {d["_id"] for d in db[COUNTS].find({}, {"_id": 1})}
        for key in keys:
            if key not in have:
                with contextlib.suppress(DuplicateKeyError):
                    db[COUNTS].insert_one(_placeholder(key))
    snapshot = _snapshot_reads(db)
    for _attempt in range(ATTEMPTS):
        with held(db):
            kept = {d["_id"]: d for d in db[COUNTS].find({"_id": {"$in": keys}})}
            machines = db[MACHINES].find({}, FIELDS).batch_size(1000) if not only_pools else iter(())
            claims = db[ADDRESS_CLAIMS].find({}, {"_id": 1}).batch_size(1000)
            started = (list(itertools.islice(machines, 1)), list(itertools.islice(claims, 1)))
        true = _tally(itertools.chain(started[0], machines), itertools.chain(started[1], claims), pools)
        true = {key: true[key] for key in keys}
        if not snapshot:
            with held(db):
                moved = {d["_id"]: d.get("seq") for d in db[COUNTS].find({"_id": {"$in": keys}}, {"seq": 1})}
            if any(moved.get(key) != (kept.get(key) or {}).get("seq") for key in keys):
                continue
        differences = _differences({k: d for k, d in kept.items() if d.get("exact")}, true)
        if not repair or _correct(db, kept, true):
            return [dict(zip(("counter", "field", "kept", "counted"), d, strict=True)) for d in differences]
    log.warning("counts: not recounted, writes kept moving the counters during %d passes; the next sweep tries again",
                ATTEMPTS)
    return None


def _correct(db, kept, true):
    """Apply true - kept to each counter, conditional on no recount in between; return whether all applied."""
    for key, counted in true.items():
        doc = kept.get(key)
        if doc is None:
            continue  # created after we read (or never): the next recount
        if key == HEAD_KEY:
            # A head that is only shorter is no drift, but is refilled here all the same; only if unchanged since.
            if (doc.get("head") or [], doc.get("upto", "")) != (counted["head"], counted["upto"]) or not doc["exact"]:
                db[COUNTS].update_one({"_id": key, "rc": doc.get("rc"), "seq": doc.get("seq")},
                                      {"$inc": {"rc": 1, "seq": 1}, "$set": dict(counted, exact=True)})
            continue
        have, want = _numbers(doc, key), _numbers(counted, key)
        inc = {f: want.get(f, 0) - have.get(f, 0) for f in set(have) | set(want)}
        inc = {f: n for f, n in inc.items() if n}
        if not inc and doc.get("exact"):
            continue
        if not db[COUNTS].update_one({"_id": key, "rc": doc.get("rc")},
                                     {"$inc": dict(inc, rc=1, seq=1), "$set": {"exact": True}}).matched_count:
            return False
    for doc in db[COUNTS].find({}, {"_id": 1}) if MACHINES_KEY in true else ():
        if str(doc["_id"]).startswith("pool:") and doc["_id"] not in true:
            db[COUNTS].delete_one({"_id": doc["_id"]})  # the counter of a pool deleted meanwhile
    return True
