"""Events: every history entry, numbered in one sequence that readers follow and resume without a miss.

history.py hands every entry it stores to `publish`, which inserts a numbered copy into the
`events` collection: `_id` is the event id (1, 2, 3, ...), `page` is `_id // PAGE`. The copy is kept
for a bounded time (`prune`) in a collection of its own, so that reading recent events never
touches the whole history: on FerretDB every query scans its collection, and only equality
filters (`page`) are evaluated inside PostgreSQL instead of being decoded one by one.

The no-miss protocol, on every engine, with no lock:
1. An id is taken by inserting the event with `_id` = the id: the unique `_id` refuses a second
   taker atomically (MongoDB and FerretDB alike). Id N+1 is only ever tried after id N was seen
   committed (read as the top, or refused as a duplicate, which on both engines waits for the other
   writer's commit). So when event K is visible, every event below K has committed: ids are
   contiguous and commit in order, and no event can appear later below one a reader already saw.
2. Readers (`read`) deliver a contiguous run after the last id they gave out. A scan that happens to
   see K+1 before K (a MongoDB cursor yields while K commits) stops at the hole and reads again.
3. The `top` mark (the highest id known, raised with $max after each insert) is a hint for writers
   and a cheap "anything new?" for readers; it can lag (a writer died before raising it), never lead.

Crash order: an event is published before its history entry is stored (history.py), and after the
change it describes. A crash between the two leaves an event whose history entry is missing: a
listener hears of a change that did happen. A crash after the insert and before the mark is raised
leaves the mark behind; the next writer finds its slot taken, probes past it, and raises the mark.

Retention: `prune` drops whole pages older than the retention, raising the `floor` mark first. A
reader resuming below the floor has lost events and is told so (`floor`).
"""

import datetime
import uuid

from pymongo.errors import BulkWriteError, DuplicateKeyError

from ..schema import NAME_FIELDS

EVENTS = "events"
MARKS = "event_marks"  # {"_id": "top"|"floor", "seq": N}
PAGE = 64
MAX_TRIES = 1000  # slots lost to other writers in a row before giving up (each loss is another's progress)
PROBE_AFTER = 8  # slots lost in a row before looking for the top in the pages themselves
DUPLICATE = 11000
ENTRY_FIELDS = ("resource", "name", "item_id", "at", "user", "action", "changes", "reason", "job_id")


def publish(db, entries):
    """Insert a numbered event for each history entry, in order; return their ids.

    Raises PyMongoError when the database fails, RuntimeError after MAX_TRIES lost slots.
    """
    docs = [{k: entry.get(k) for k in ENTRY_FIELDS} for entry in entries]
    ids = []
    top = _mark(db, "top")
    for attempt in range(MAX_TRIES):
        batch = docs[len(ids):]
        for offset, doc in enumerate(batch, 1):
            doc["_id"] = top + offset
            doc["page"] = doc["_id"] // PAGE
        inserted = _insert_in_order(db[EVENTS], batch)
        ids.extend(doc["_id"] for doc in batch[:inserted])
        top += inserted
        if len(ids) == len(docs):
            _raise_mark(db, "top", top)
            return ids
        # Slot top+1 is another writer's, committed: go on from there, or from the mark if it is higher
        # (usually it is: the other writer raised it). Reading pages is for a mark far behind (lost).
        top = max(top + 1, _mark(db, "top"))
        if attempt >= PROBE_AFTER:
            top = _probe(db, top)
    raise RuntimeError(f"could not number an event after {MAX_TRIES} tries")


def _insert_in_order(collection, docs):
    # Return how many of `docs` went in, in order, before the first whose id was taken.
    try:
        if len(docs) == 1:
            collection.insert_one(docs[0])
        else:
            collection.insert_many(docs, ordered=True)
        return len(docs)
    except DuplicateKeyError:
        return 0
    except BulkWriteError as e:
        errors = e.details.get("writeErrors") or []
        if any(error.get("code") != DUPLICATE for error in errors):
            raise
        return int(e.details.get("nInserted", 0))


def _probe(db, taken):
    # Return the highest id in the contiguous run that holds `taken` (known to exist).
    top = taken
    while True:
        ids = [doc["_id"] for doc in db[EVENTS].find({"page": (top + 1) // PAGE}, {"_id": 1})]
        higher = [i for i in ids if isinstance(i, int) and i > top]
        if not higher:
            return top
        top = max(higher)


def _mark(db, name):
    doc = db[MARKS].find_one({"_id": name})
    return int(doc["seq"]) if doc else 0


def _raise_mark(db, name, seq):
    if db[MARKS].update_one({"_id": name}, {"$max": {"seq": seq}}).matched_count:
        return
    try:  # the first time: an upsert (a plain update is cheaper on FerretDB, so not always)
        db[MARKS].update_one({"_id": name}, {"$max": {"seq": seq}, "$setOnInsert": {"epoch": uuid.uuid4().hex}},
                             upsert=True)
    except DuplicateKeyError:  # two first upserts at once: the mark exists now
        db[MARKS].update_one({"_id": name}, {"$max": {"seq": seq}})


def top(db):
    """Return the highest event id known (0 before the first event); it may lag a moment, never lead."""
    return _mark(db, "top")


def head(db):
    """Return (top, epoch): the epoch changes when the sequence starts again (the collections were emptied)."""
    doc = db[MARKS].find_one({"_id": "top"})
    return (int(doc["seq"]), doc.get("epoch")) if doc else (0, None)


def floor(db):
    """Return the lowest event id still kept (1 until a prune dropped some)."""
    return max(1, _mark(db, "floor"))


def read(db, after, limit=4 * PAGE):
    """Return up to `limit` events after id `after`, contiguous and in order (fewer: no more yet).

    An event dropped by retention is not waited for: check `floor` first.
    """
    found = []
    want = after + 1
    while len(found) < limit:
        page = want // PAGE
        docs = sorted((d for d in db[EVENTS].find({"page": page}) if isinstance(d["_id"], int)),
                      key=lambda d: d["_id"])
        for doc in docs:
            if doc["_id"] < want:
                continue
            if doc["_id"] > want or len(found) >= limit:
                break  # a hole: the event at `want` is not visible yet
            found.append(doc)
            want += 1
        if want // PAGE == page:
            return found  # this page is not complete yet: nothing after it either
    return found


def next_after(db, after):
    """Return the lowest event id above `after` that exists, or None (to step over a hole made by hand)."""
    last = top(db)
    for page in range((after + 1) // PAGE, last // PAGE + 1):
        ids = [d["_id"] for d in db[EVENTS].find({"page": page}, {"_id": 1})
               if isinstance(d["_id"], int) and d["_id"] > after]
        if ids:
            return min(ids)
    return None


def prune(db, now, keep_seconds):
    """Drop the whole pages of events older than `keep_seconds` (never the newest page); return how many events.

    Raises the floor mark before deleting, so a reader resuming below it learns it lost events.
    """
    cutoff = now - datetime.timedelta(seconds=keep_seconds)
    page, last_page, dropped = floor(db) // PAGE, top(db) // PAGE, 0
    while page < last_page:
        times = [d["at"] for d in db[EVENTS].find({"page": page}, {"at": 1}) if d.get("at") is not None]
        if times and max(times) >= cutoff:
            break
        _raise_mark(db, "floor", (page + 1) * PAGE)
        dropped += db[EVENTS].delete_many({"page": page}).deleted_count
        page += 1
    return dropped


# -- what an event says: its type and data, from the history entry ------------------------------

ADDRESS_KINDS = {"public-addresses": "public", "private-addresses": "private"}
ITEM_VERBS = {"create": "created", "update": "updated", "delete": "deleted"}


def event_type(doc):
    """Return the type of the event of a history entry: machine.updated, reservation.granted, ...

    Machines: created, updated (any change but create and delete: reserve, release, expire, ...),
    deleted. Reservations: reservation.<action>, whatever the action (queued, granted, extended,
    released, expired, cancelled, timed_out, and any added later). Addresses: allocated when
    gaining an owner (allocation from a pool, or a write setting one), released when losing it
    (release, a write clearing it, deleting an owned address); otherwise created, updated, deleted.
    """
    resource, action = doc.get("resource"), doc.get("action")
    if resource == "machines":
        return "machine." + {"create": "created", "delete": "deleted"}.get(action, "updated")
    if resource in ADDRESS_KINDS:
        return "address." + _address_verb(action, (doc.get("changes") or {}).get("owner"))
    if resource == "reservations":
        return f"reservation.{action}"
    return f"{(resource or 'item').rstrip('s')}.{ITEM_VERBS.get(action, action)}"


def _address_verb(action, owner):
    if action == "allocate":
        return "allocated"
    if action == "release":
        return "released"
    if isinstance(owner, dict):
        had, has = owner.get("before"), owner.get("after")
        if has and not had:
            return "allocated"
        if had and not has:
            return "released"
    return ITEM_VERBS.get(action, action)


def event_data(doc):
    """Return the data of the event of a history entry: the item named, what changed, who, why, when."""
    resource = doc.get("resource")
    changes = doc.get("changes") or {}
    data = {"_id": doc.get("item_id")}
    if resource in NAME_FIELDS:
        data[NAME_FIELDS[resource]] = doc.get("name")
    if resource in ADDRESS_KINDS:
        data["kind"] = ADDRESS_KINDS[resource]
    if resource == "reservations":
        for field in ("state", "hostnames"):
            if isinstance(changes.get(field), dict):
                data[field] = changes[field].get("after")
    data.update({"action": doc.get("action"), "changes": changes, "user": doc.get("user"),
                 "reason": doc.get("reason"), "job_id": doc.get("job_id"), "at": doc.get("at")})
    return data
