"""rm-check: read the database and report every broken invariant of machines, reservations and addresses.

Each violation names its invariant, the item, what is wrong, and whether the sweep repairs it
(`repairable`). Work still in progress (a pending reservation, an ending not finished) is not a
violation until it is older than the grace period: pass 0 once no server is serving.

It may run while the service serves: machines, claims and reservations are read one after the
other, so a reservation made or ended between two reads can look broken. With a grace period, a
violation is reported only when it is found again, the same, by CONFIRMATIONS more passes made
CONFIRM_SECONDS apart (longer than any request takes): what is broken stays broken until repaired,
what was in flight has moved on.

The invariants:
- reserved-machine: every active reservation's machines exist, are `in_use`, name it, and hold its claims;
- complete: an active reservation holds as many machines as it asked for;
- one-holder: no machine is in two active reservations, and no claim is held for a reservation
  that does not list the machine;
- in-use-reserved: every `in_use` machine (or one naming a reservation) has an active reservation holding it;
- address-claimed: every address with an owner holds its claim, and every claim's address has an owner;
- half-done: nothing pending or half-ended past the grace period;
- counts: the counters kept beside the data (counts.py: machines by state, the first names in
  order, pools' allocated addresses) agree with a count of the data, read consistently;
- acknowledged: (tests) every acknowledged write's value is present, given as expectations.
"""

import datetime

from . import counts
from .addresses import collection_of
from .clock import SYSTEM
from .store import ADDRESS_CLAIMS, ALLOCATIONS, ENDS, MACHINE_CLAIMS, RESERVATIONS


class Report:
    """The violations found, in the order found."""

    def __init__(self):
        self.violations = []

    def add(self, invariant, item, detail, repairable):
        self.violations.append({"invariant": invariant, "item": item, "detail": detail, "repairable": repairable})


CONFIRMATIONS = 2
CONFIRM_SECONDS = 0.5


def check(db, grace=0, expected=(), clock=SYSTEM):
    """Return the list of violations in `db` (see the module doc).

    `expected`: (collection, _id, field, value) of acknowledged writes to verify.
    """
    found = _once(db, grace, expected, clock)
    for _confirmation in range(CONFIRMATIONS if grace > 0 else 0):
        if not found:
            break
        clock.sleep(CONFIRM_SECONDS)
        again = {_key(v) for v in _once(db, grace, expected, clock)}
        found = [v for v in found if _key(v) in again]
    return found


def _key(violation):
    return violation["invariant"], violation["item"], violation["detail"]


def _once(db, grace, expected, clock):
    report = Report()
    cutoff = clock.now() - datetime.timedelta(seconds=grace)
    _check_machines(db, report, cutoff)
    for kind in ("public", "private"):
        _check_addresses(db, report, kind, cutoff)
    _check_counts(db, report)
    for collection, _id, field, value in expected:
        doc = db[collection].find_one({"_id": _id}, {field.split(".")[0]: 1})
        found = _dig(doc, field) if doc is not None else "(no such document)"
        if found != value:
            report.add("acknowledged", f"{collection}/{_id}", f"{field} is {found!r}, acknowledged {value!r}", False)
    return report.violations


def _check_counts(db, report):
    differences = counts.recount(db, repair=False)
    if differences is None:  # writes kept moving the counters (MongoDB): not judged this time
        return
    for d in differences:
        report.add("counts", f"counter {d['counter']}", f"{d['field']}: kept {d['kept']}, counted {d['counted']}", True)


def _dig(doc, dotted):
    for part in dotted.split("."):
        doc = doc.get(part) if isinstance(doc, dict) else None
    return doc


def _check_machines(db, report, cutoff):
    machines = {m["_id"]: m for m in db.machines.find({}, {"hostname": 1, "state": 1, "reservation": 1})}
    claims = {c["_id"]: c for c in db[MACHINE_CLAIMS].find()}
    holders, ending = {}, set()
    for res in db[RESERVATIONS].find({"state": {"$in": ["pending", "active"]}}):
        rid = res["_id"]
        if res["state"] == "pending" or res.get("ending"):
            # A grant from the queue is judged by when it began, not when the request came.
            since = (res.get("ended") if res.get("ending") and res["state"] == "active"
                     else res.get("granting_at") or res.get("_created"))
            if since is None or since < cutoff:
                doing = "pending" if res["state"] == "pending" else f"being {res['ending']}"
                report.add("half-done", f"reservation {rid}", f"{doing} since {since}", True)
            elif res["state"] == "active":
                ending.add(rid)  # an ending under way: its machines and claims are going, not stray
            continue
        ids = res.get("machine_ids") or []
        if len(ids) != res.get("count"):
            report.add("complete", f"reservation {rid}", f"holds {len(ids)} machines, asked for {res.get('count')}",
                       False)
        for machine_id in ids:
            holders.setdefault(machine_id, []).append(rid)
            machine = machines.get(machine_id)
            if machine is None:
                report.add("reserved-machine", f"reservation {rid}", f"machine {machine_id} does not exist", False)
                continue
            if machine.get("state") != "in_use" or machine.get("reservation") != rid:
                report.add("reserved-machine", f"machine {machine['hostname']}",
                           f"is {machine.get('state')} naming reservation {machine.get('reservation')}, "
                           f"but active reservation {rid} lists it", False)
            claim = claims.get(machine_id)
            if claim is None or claim.get("holder") != rid:
                report.add("reserved-machine", f"machine {machine['hostname']}",
                           f"claim held by {claim and claim.get('holder')}, not by its reservation {rid}", False)
    for machine_id, rids in holders.items():
        if len(rids) > 1:
            name = machines.get(machine_id, {}).get("hostname", machine_id)
            report.add("one-holder", f"machine {name}", f"in active reservations {', '.join(map(str, rids))}", False)
    pending = {r["_id"] for r in db[RESERVATIONS].find({"state": "pending"}, {"_id": 1})} | ending
    for machine_id, claim in claims.items():
        if "hostname" not in claim:
            report.add("one-holder", f"claim {machine_id}", "keyed by hostname (before 1.1)", True)
        elif claim.get("holder") not in pending and claim.get("holder") not in holders.get(machine_id, []):
            if claim.get("at") is None or claim["at"] < cutoff:
                report.add("one-holder", f"machine {claim.get('hostname')}",
                           f"claimed by {claim.get('holder')}, which does not hold it", True)
    for machine_id, machine in machines.items():
        rid = machine.get("reservation")
        if machine.get("state") != "in_use" and rid is None:
            continue
        if rid in holders.get(machine_id, []) or rid in pending:
            continue
        report.add("in-use-reserved", f"machine {machine['hostname']}",
                   f"is {machine.get('state')} naming reservation {rid}, which does not hold it"
                   + ("" if rid else " (a plain write set in_use? reserve through /reservations)"), rid is not None)
    for marker in db[ENDS].find():
        report.add("half-done", f"reservation {marker['_id']}", "end marker of an earlier version", True)


def _check_addresses(db, report, kind, cutoff):
    owned = {d["address"]: d for d in db[collection_of(kind)].find({"owner": {"$nin": [None, ""]}},
                                                                   {"address": 1, "owner": 1})}
    pending = {a["_id"] for a in db[ALLOCATIONS].find({"state": "pending"}, {"_id": 1, "_created": 1})
               if a["_created"] >= cutoff}
    claims = {c["_id"].split("/", 1)[1]: c for c in db[ADDRESS_CLAIMS].find({"kind": kind})}
    for address, doc in owned.items():
        if address not in claims:
            report.add("address-claimed", f"{kind} address {address}", f"owned by {doc['owner']} without a claim", True)
    for address, claim in claims.items():
        if address not in owned and claim.get("holder") not in pending and claim["at"] < cutoff:
            report.add("address-claimed", f"{kind} address {address}",
                       f"claimed by {claim.get('holder')} but has no owner", True)
    for alloc in db[ALLOCATIONS].find({"state": "pending", "kind": kind, "_created": {"$lt": cutoff}}, {"_id": 1}):
        report.add("half-done", f"allocation {alloc['_id']}", "pending", True)


