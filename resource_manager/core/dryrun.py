"""The dry run of a reservation: what would be reserved, and why not when too little matches. Changes nothing."""

from .store import MACHINE_CLAIMS, MACHINES, RESERVATIONS


def explain(core, req, earmarked=frozenset()):
    """Answer a dry run (see the README's Reserving machines).

    `earmarked`: _ids of idle machines held back for requests waiting in line (queue.earmarked).
    """
    db = core.db
    matching = list(db[MACHINES].find(req.get("where") or {}, {"hostname": 1, "state": 1, "reservation": 1}))
    busy = {c["_id"] for c in db[MACHINE_CLAIMS].find({}, {"_id": 1})}
    expired = {r["_id"] for r in db[RESERVATIONS].find({"state": "active", "ends_at": {"$lt": core.now()}},
                                                        {"_id": 1})}
    states = {}
    for m in matching:
        states[m.get("state")] = states.get(m.get("state"), 0) + 1
    unclaimed = [m for m in matching if m.get("state") == "idle" and m["_id"] not in busy]
    free = sorted(m["hostname"] for m in unclaimed if m["_id"] not in earmarked)
    held_for_line = len(unclaimed) - len(free)
    reclaimable = sorted(m["hostname"] for m in matching if m.get("reservation") in expired)
    available = free + reclaimable
    count = req["count"]
    body = {"would_reserve": available[:count] if len(available) >= count else [], "requested": count,
            "matching": len(matching), "idle": states.get("idle", 0), "available": len(available),
            "reclaimable": len(reclaimable), "earmarked": held_for_line, "states": states}
    if len(available) < count:
        body["explanation"] = (
            f"requested {count}, {len(available)} available: {len(matching)} machines match the constraints, "
            f"{states.get('idle', 0)} of them idle ({len(unclaimed)} unclaimed, {held_for_line} of those "
            f"earmarked for requests waiting in line), {len(reclaimable)} held by expired leases")
    return body
