"""/reservations: reserve machines all or nothing (or wait in the queue), release, extend leases, sweep."""

import datetime
import time

import pymongo
from flask import Blueprint, current_app, jsonify, request

from ...core import allocation, queue, sweep
from ...core.allocation import RESERVATIONS, AllocationError
from ...core.history import COLLECTION as HISTORY
from ..auth import require_role
from ..bodies import validate
from ..db import database
from ..errors import error_response, loads_strict
from ..queueing import KICK_WAIT, granter, kick
from ..responses import created, idempotency_key, invalid

bp = Blueprint("reservations", __name__)

PUBLIC_FIELDS = ("_id", "owner", "job_id", "count", "hostnames", "state", "expires", "where", "lease_seconds",
                 "reason", "user", "_created", "_updated")
QUEUE_FIELDS = ("queued_at", "wait_until", "wait_seconds", "granted_at", "ended")
RENDERED_FIELDS = PUBLIC_FIELDS + QUEUE_FIELDS + ("position", "_links")  # every field render() may give
LONG_POLL_MAX = 60  # s a GET ?wait= may hold a worker thread (below any worker timeout)
LONG_POLL_EVERY = 0.1
QUEUE_STATES = ("queued", "cancelled", "timed_out")


def render(res, place=None):
    """Return the JSON body of a reservation (with its queue fields and `position` if it waited)."""
    fmt = current_app.config["DATE_FORMAT"]
    body = {}
    fields = PUBLIC_FIELDS + (QUEUE_FIELDS if res.get("queued_at") is not None else ())
    for field in fields:
        value = res.get(field)
        body[field] = value.strftime(fmt) if isinstance(value, datetime.datetime) else value
    if isinstance(body["where"], str):
        body["where"] = loads_strict(body["where"])
    if res.get("state") == "queued":
        body["position"] = place if place is not None else queue.position(queue.waiting(database()), res["_id"])
    body["_links"] = {"self": {"href": f"/reservations/{res['_id']}"}}
    return body


def _answer(res):
    """Answer a reservation just made: 201 when active, 202 with its place in line while queued."""
    response = created(render(res), f"/reservations/{res['_id']}")
    if res.get("state") in ("queued", "pending"):
        response.status_code = 202
    return response


def _json_body():
    body = request.get_json(silent=True) if request.content_length else {}
    if not isinstance(body, dict):
        return None
    return body


def _failure(e):
    return error_response(e.status, e.message, headers=e.headers())


def _flag(name):
    return request.args.get(name, "").lower() in ("1", "true", "yes")


@bp.post("/reservations")
def create():
    """Reserve machines (or, with ?dry_run=1, say what would be reserved)."""
    user = require_role("operator", "admin")["username"]
    body = _json_body()
    if body is None:
        return error_response(400, "body must be a JSON object")
    req, issues = validate("reservation", body, user)
    if issues:
        return invalid("reservation", issues)
    wait_seconds = req.pop("wait_seconds")
    db = database()
    if _flag("dry_run"):
        # As a request would be met: the machines earmarked for those waiting in line are not free.
        earmarked = queue.earmarked(db) if queue.anyone_waiting(db) else frozenset()
        return jsonify(allocation.explain(db, req, earmarked)), 200
    key = idempotency_key()
    grace = sweep.grace_seconds(current_app)
    ahead = queue.anyone_waiting(db)
    # Those who wait take their turn; those who do not may not take what is earmarked for them.
    line = {"wait_seconds": wait_seconds, "ahead": ahead} if wait_seconds else None
    exclude = queue.earmarked(db) if ahead and not wait_seconds else ()
    try:
        res, replayed = allocation.reserve(db, req, user, key, grace,
                                           current_app.config.get("IDEMPOTENCY_WAIT_SECONDS", 10), line, exclude)
    except AllocationError as e:
        if ahead:
            kick()  # what this request held while it tried may be what the head of the line waits for
        return _failure(e)
    if res["state"] == "queued" and not replayed:
        # Granted at once if it can be met in its turn (a pass waits for one already under way).
        queue.serve(db, grace, wait=KICK_WAIT if ahead else 0)
        try:
            # A granter elsewhere may be granting it right now: answer how that ends.
            res = allocation.await_settled(db[RESERVATIONS], res["_id"], KICK_WAIT) or res
        except AllocationError:
            res = db[RESERVATIONS].find_one({"_id": res["_id"]}) or res
    return _answer(res)


@bp.get("/reservations")
def listing():
    """List reservations, newest first, filtered by job_id, owner and state."""
    query = {field: request.args[field] for field in ("job_id", "owner", "state") if request.args.get(field)}
    try:
        limit = max(1, min(int(request.args.get("max_results", 1000)), 1000))
    except ValueError:
        return error_response(400, "max_results must be an integer")
    db = database()
    if query.get("state") == "queued":
        # The line, in order of arrival, each with its place in it.
        line = [r for r in queue.waiting(db) if all(r.get(f) == v for f, v in query.items())]
        everyone = queue.waiting(db) if len(query) > 1 else line
        places = {r["_id"]: n for n, r in enumerate(everyone, 1)}
        return jsonify({"_items": [render(r, places[r["_id"]]) for r in line[:limit]]})
    cursor = db[RESERVATIONS].find(query).sort("_created", pymongo.DESCENDING).limit(limit)
    items = list(cursor)
    places = {}
    if any(r.get("state") == "queued" for r in items):
        places = {r["_id"]: n for n, r in enumerate(queue.waiting(db), 1)}
    return jsonify({"_items": [render(r, places.get(r["_id"])) for r in items]})


@bp.get("/reservations/<rid>")
def show(rid):
    """Answer one reservation; with ?wait=S, as soon as its state changes (from ?state= if given), or after S s."""
    wait = request.args.get("wait")
    if wait is not None:
        try:
            wait = int(wait)
        except ValueError:
            wait = -1
        if not 0 <= wait <= LONG_POLL_MAX:
            return error_response(400, f"wait must be a whole number of seconds from 0 to {LONG_POLL_MAX}")
    db = database()
    res = db[RESERVATIONS].find_one({"_id": rid})
    if res is None:
        return error_response(404, f"no reservation {rid}")
    if wait:
        res = _await_change(db, res, wait, request.args.get("state"))
    return jsonify(render(res))


def _await_change(db, res, wait, seen=None):
    # Changed from the state the client last saw (?state=), else from the one found now: a change
    # that landed between two polls is answered at once. `pending` (a grant under way) is no change.
    seen = {seen or res["state"], "pending"}
    deadline = time.monotonic() + wait
    while res["state"] in seen and time.monotonic() < deadline:
        granter().touch()
        time.sleep(LONG_POLL_EVERY)
        res = db[RESERVATIONS].find_one({"_id": res["_id"]}) or res
    return res


@bp.get("/reservations/<rid>/history")
def history(rid):
    """Answer the queue events of one reservation (queued, granted, cancelled, timed_out), oldest first."""
    db = database()
    if db[RESERVATIONS].find_one({"_id": rid}, {"_id": 1}) is None:
        return error_response(404, f"no reservation {rid}")
    fmt = current_app.config["DATE_FORMAT"]
    items = []
    for e in db[HISTORY].find({"resource": "reservations", "item_id": rid}, {"_id": 0, "resource": 0}).sort("at"):
        e["at"] = e["at"].strftime(fmt)
        items.append(e)
    return jsonify({"_items": items})


@bp.delete("/reservations/<rid>")
def release_one(rid):
    """Release one reservation; releasing it again frees nothing and is fine."""
    user = require_role("operator", "admin")["username"]
    db = database()
    res = db[RESERVATIONS].find_one({"_id": rid}, {"state": 1})
    try:
        if res is not None and res["state"] in QUEUE_STATES:
            state = queue.cancel(db, rid, user, request.args.get("reason"))
            # Who waited behind it may be served now (earmarks move).
            kick()
            cancelled = state == "cancelled" and res["state"] == "queued"
            return jsonify({"released": [], "reservations": [rid] if cancelled else [], "state": state})
        released = allocation.release(db, rid, user, request.args.get("reason"))
    except AllocationError as e:
        return _failure(e)
    if released is None:
        return error_response(404, f"no reservation {rid}")
    if released:
        kick()
    return jsonify({"released": released, "reservations": [rid] if released else []})


@bp.delete("/reservations")
def release_job():
    """Release every active reservation of ?job_id=, and cancel its queued ones."""
    user = require_role("operator", "admin")["username"]
    job_id = request.args.get("job_id")
    if not job_id:
        return error_response(400, "give ?job_id= to release every reservation of a job")
    db = database()
    released, ids = [], []
    for res in list(db[RESERVATIONS].find({"job_id": job_id, "state": "active"})):
        freed = allocation.end_reservation(db, res, "released", user, request.args.get("reason"))
        if freed is not None:
            released += freed
            ids.append(res["_id"])
    for res in list(db[RESERVATIONS].find({"job_id": job_id, "state": "queued"}, {"_id": 1})):
        try:
            if queue.cancel(db, res["_id"], user, request.args.get("reason")) == "cancelled":
                ids.append(res["_id"])
        except AllocationError:
            pass  # being granted right now: it is active in a moment, released by the next call
    if ids:
        kick()
    return jsonify({"released": sorted(released), "reservations": ids})


@bp.post("/reservations/<rid>/extend")
def extend(rid):
    """Extend a reservation's lease to lease_seconds from now."""
    require_role("operator", "admin")
    body = _json_body()
    if body is None:
        return error_response(400, "body must be a JSON object")
    req, issues = validate("extension", body)
    if issues:
        return invalid("extension", issues)
    try:
        res = allocation.extend(database(), rid, req["lease_seconds"])
    except AllocationError as e:
        return _failure(e)
    return jsonify(render(res))


@bp.post("/reservations/sweep")
def run_sweep():
    """Expire leases and repair half-done reservations and allocations."""
    user = require_role("operator", "admin")
    grace = sweep.grace_seconds(current_app)
    if request.args.get("grace") is not None:
        # Shortening the grace period risks undoing live requests: an admin's call, after a restart.
        if user["role"] != "admin":
            return error_response(403, "only an admin may set ?grace=")
        try:
            # At most ten years: a timedelta past ~2.7 million years overflows (it was a 500).
            grace = min(max(0, int(request.args["grace"])), 10 * 366 * 86400)
        except ValueError:
            return error_response(400, "grace must be a number of seconds")
    return jsonify(sweep.sweep(database(), grace, user["username"], sweep.pxe_timeout_seconds(current_app)))


def _machines_changed(*args):
    # Machines added, or made idle by a plain write: queued requests may be met now.
    docs = args[0] if isinstance(args[0], list) else [dict(args[1], **args[0])] if len(args) > 1 else [args[0]]
    if any(d.get("state") == "idle" for d in docs if isinstance(d, dict)):
        kick()


def init_app(app):
    """Register the reservation routes, and the queue's triggers on machine writes."""
    app.on_inserted_machines += _machines_changed
    app.on_updated_machines += _machines_changed
    app.on_replaced_machines += _machines_changed
    app.register_blueprint(bp)
