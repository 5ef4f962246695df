"""Claims: the only code that grants exclusivity, and the one way a claimed machine changes.

A machine or an address belongs to whoever inserted its claim document (`_id` = the machine's
`_id`, or "<kind>/<canonical address>": identities that never change, so a rename cannot open a
second claim). The insert of an existing `_id` fails atomically (E11000) on MongoDB and FerretDB
alike, so two claimants can never both win, whatever reads they made before. Claims are deleted
only by their own `_id` and holder (or address document).

A claimed machine changes by `set_machine`: one conditional write (atomic on every engine,
atomic.py) with a fresh `_etag`, so a client holding the old version gets 412, then its history.
"""

from pymongo.errors import DuplicateKeyError

from . import counts, history
from .clock import whole_seconds
from .context import NOBODY
from .etag import etag
from .store import MACHINE_CLAIMS, MACHINES

MACHINE_FREED = {"state": "idle", "owner": None, "job_id": None, "reservation": None}


def claim_machine(core, machine, holder):
    """Insert the claim on `machine` (keyed by its _id) for `holder`; return whether we won it."""
    try:
        core.db[MACHINE_CLAIMS].insert_one({"_id": machine["_id"], "hostname": machine.get("hostname"),
                                            "holder": holder, "at": core.now()})
        return True
    except DuplicateKeyError:
        return False


def drop_machine_claim(core, machine_id, holder):
    """Delete the claim on machine `machine_id`, only if `holder` holds it."""
    core.db[MACHINE_CLAIMS].delete_one({"_id": machine_id, "holder": holder})


def rekey_legacy_claims(core):
    """Move claims keyed by hostname (before 1.1) to the machine's _id; return how many moved."""
    db, moved = core.db, 0
    for claim in list(db[MACHINE_CLAIMS].find({"hostname": {"$exists": False}})):
        machine = db[MACHINES].find_one({"hostname": claim["_id"]}, {"hostname": 1})
        if machine is not None:
            try:
                db[MACHINE_CLAIMS].insert_one({"_id": machine["_id"], "hostname": machine["hostname"],
                                               "holder": claim["holder"], "at": claim["at"]})
            except DuplicateKeyError:
                pass  # already claimed under its _id; the sweep judges which holder is real
        db[MACHINE_CLAIMS].delete_one({"_id": claim["_id"], "holder": claim["holder"]})
        moved += 1
    return moved


def address_claim_id(kind, address):
    """Return the claim _id of an address of kind public/private."""
    return f"{kind}/{address}"


def claim_address(core, kind, address, holder, doc_id, key):
    """Insert the address's claim; return whether we won it."""
    try:
        counts.insert_address_claim(core.db, {"_id": address_claim_id(kind, address), "kind": kind, "ipkey": key,
                                              "holder": holder, "doc": doc_id, "at": core.now()})
        return True
    except DuplicateKeyError:
        return False


def drop_address_claim(core, kind, address, **match):
    """Delete the address's claim, only if it still matches (`doc=` or `holder=`)."""
    counts.delete_address_claim(core.db, {"_id": address_claim_id(kind, address), **match})


def stamp(before, fields, now):
    """Return the $set for `fields` on an Eve document, with a fresh _etag and _updated (whole seconds)."""
    after = {k: v for k, v in before.items() if k != "_etag"}
    after.update(fields)
    after["_updated"] = whole_seconds(now)
    return dict(fields, _updated=after["_updated"], _etag=etag(after))


def set_machine(core, machine, fields, match, action, actor=NOBODY):
    """Change `machine` (as read) by `fields` if it still matches `match`; record it; return whether it did."""
    now = core.now()
    if not counts.update_machine(core.db, dict(match, _id=machine["_id"]), stamp(machine, fields, now)):
        return False
    after = dict(machine, **fields)
    history.record(core.db, MACHINES, after, action, history.diff(machine, after), actor, at=now)
    return True


def return_machine(core, machine, rid, action, actor=NOBODY):
    """Put a machine held by reservation `rid` back to idle (owner and job cleared); return whether it was held."""
    who = actor if actor.job_id is not None else type(actor)(actor.user, actor.reason, machine.get("job_id"))
    return set_machine(core, machine, MACHINE_FREED, {"reservation": rid}, action, who)
