"""The dry run of a reservation: what would be reserved now, or when, and by which rule. Changes nothing.

It asks the scheduling rule (schedule.py) the same question a real request would, over a fresh
read (queue.Survey), so it answers what a request made now would get: the machines (rule `free`,
or `backfill` when it may use machines earmarked for later starts because it gives them back in
time), or why not (`short`, `impossible`, `quota`) and, with a wait, when it would start (`eta`).
"""

import datetime

from . import queue, schedule
from .store import MACHINE_CLAIMS, RESERVATIONS

DRY_RUN = "(dry run)"


def explain(core, req, user=None, wait_seconds=0):
    """Answer a dry run (see docs/reference/reservations.md)."""
    db, now = core.db, core.now()
    doc = {"_id": DRY_RUN, "count": req["count"], "where": req.get("where") or {}, "user": user,
           "priority": req.get("priority", 50), "lease_seconds": req.get("lease_seconds"), "_created": now,
           "state": "queued" if wait_seconds else "pending"}
    if wait_seconds:
        doc.update(queued_at=now, wait_until=now + datetime.timedelta(seconds=wait_seconds))
    survey = queue.Survey(core, extra=[doc])
    plan = survey.plan()
    verdict = plan.verdicts[DRY_RUN]
    matches = next(r.matches for r in survey.requests if r.id == DRY_RUN)
    matching = [survey.docs[k] for k in sorted(matches)]
    busy = {c["_id"] for c in db[MACHINE_CLAIMS].find({}, {"_id": 1})}
    expired = {r["_id"] for r in db[RESERVATIONS].find({"state": "active", "ends_at": {"$lt": now}}, {"_id": 1})}
    states = {}
    for m in matching:
        states[m.get("state")] = states.get(m.get("state"), 0) + 1
    unclaimed = {survey.docs[k]["_id"] for k in matches if survey.machines[k].free} - busy
    earmarked_keys = set()
    for rid, other in plan.verdicts.items():
        if rid != DRY_RUN:
            earmarked_keys.update(other.earmarked)
    held_for_line = sum(1 for k in matches if k in earmarked_keys and survey.machines[k].free)
    reclaimable = sorted(m["hostname"] for m in matching if m.get("reservation") in expired)
    count = req["count"]
    granted = [survey.docs[k]["hostname"] for k in verdict.granted]
    fmt = "%Y-%m-%dT%H:%M:%SZ"
    body = {"would_reserve": granted, "requested": count, "matching": len(matching),
            "idle": states.get("idle", 0), "available": verdict.available, "reclaimable": len(reclaimable),
            "earmarked": held_for_line, "states": states, "rule": verdict.rule,
            "eta": verdict.start.strftime(fmt) if verdict.start else None,
            "blocked_by": {"reservations": [{"_id": rid, "expires": ends.strftime(fmt) if ends else None}
                                            for rid, ends in verdict.holders],
                           "requests": list(verdict.ahead)}}
    if verdict.rule not in schedule.GRANTED:
        body["explanation"] = (
            f"requested {count}, {verdict.available} available: {len(matching)} machines match the constraints, "
            f"{states.get('idle', 0)} of them idle ({len(unclaimed)} unclaimed, {held_for_line} of those "
            f"earmarked for requests waiting in line), {len(reclaimable)} held by expired leases"
            + (f"; {verdict.reason}" if verdict.reason and verdict.rule != "short" else ""))
    return body
