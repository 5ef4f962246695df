"""/reservations: reserve machines all or nothing (or wait in the queue), release, extend leases, sweep."""

import datetime
import time

import pymongo
from flask import Blueprint, current_app, jsonify, request

from ...core import allocation, queue, sweep
from ...core.allocation import RESERVATIONS, AllocationError
from ...core.history import COLLECTION as HISTORY
from ...schema import RESERVATION_STATES
from ..auth import require_role
from ..bodies import validate
from ..db import database
from ..errors import error_response, loads_strict
from ..openapi import IDEMPOTENCY, WRITE_ERRORS, answer, body_ref, error_responses, op, query, register
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


def _openapi():
    """The OpenAPI of the reservation routes."""
    rid = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
    reason = query("reason", "why: kept in the history")
    paths = {
        "/reservations": {
            "get": op("listReservations", "List reservations", "reservations", parameters=[
                query("job_id", "only this job's", field="job_id"), query("owner", "only this owner's", field="owner"),
                query("state", "only those in this state (queued: the line, in order)",
                      {"type": "string", "enum": list(RESERVATION_STATES)}, field="state"),
                query("max_results", "at most this many (1000)", {"type": "integer", "minimum": 1, "maximum": 1000})],
                responses={"200": answer("ReservationList", "reservations"), **error_responses(400, 503)}),
            "post": op("reserve", "Reserve idle machines", "reservations", scope="reserve", parameters=[
                IDEMPOTENCY, query("dry_run", "1 (or true, yes): say what would be reserved, reserve nothing",
                                   {"type": "string", "example": "1"})],
                requestBody=body_ref("ReservationRequest", required=False),
                responses={"201": answer("Reservation", "reserved"), "200": answer("DryRun", "dry run only"),
                           "202": {**answer("Reservation", "queued (with wait_seconds): state queued, position"),
                                   "headers": {"Location": {"schema": {"type": "string"},
                                                            "description": "/reservations/<id>"}}},
                           "409": {"$ref": "#/components/responses/Error409"}, **WRITE_ERRORS}),
            "delete": op("releaseJob", "Release every reservation of a job (and cancel its queued ones)",
                         "reservations", scope="reserve",
                         parameters=[query("job_id", "the job", required=True), reason],
                         responses={"200": answer("Released", "released"), **WRITE_ERRORS}),
        },
        "/reservations/sweep": {"post": op(
            "sweep", "Expire overdue leases now", "reservations", write=True, parameters=[query(
                "grace", "seconds a half-done request may be in progress before it is undone (admins only)",
                {"type": "integer", "minimum": 0})],
            responses={"200": answer("Sweep", "swept"), **WRITE_ERRORS})},
        "/reservations/{id}": {
            "parameters": [rid],
            "get": op("getReservation", "Get one reservation (?wait=S: long-poll until its state changes)",
                      "reservations", parameters=[{
                           "name": "wait", "in": "query", "schema": {"type": "integer", "minimum": 0, "maximum": 60},
                           "description": "answer as soon as the state changes, or after this many seconds"}, {
                           "name": "state", "in": "query",
                           "schema": {"type": "string", "enum": list(RESERVATION_STATES)},
                           "description": "with wait: the state the client last saw; a different one answers at once"}],
                      responses={"200": answer("Reservation", "the reservation"), **error_responses(400, 404, 503)}),
            "delete": op("release", "Release a reservation, or cancel a queued one (again: released [])",
                         "reservations", scope="reserve", parameters=[reason],
                         responses={"200": answer("Released", "released"), **error_responses(401, 403, 404, 503)}),
        },
        "/reservations/{id}/history": {"parameters": [rid], "get": op(
            "reservationHistory", "Queue events of a reservation (queued, granted, cancelled, timed_out)",
            "reservations", responses={"200": answer("History", "entries, oldest first"),
                                       **error_responses(404, 503)})},
        "/reservations/{id}/extend": {"parameters": [rid], "post": op(
            "extend", "Extend a reservation's lease", "reservations", scope="reserve", requestBody=body_ref("Extend"),
            responses={"200": answer("Reservation", "extended"), **error_responses(404, 409), **WRITE_ERRORS})},
    }
    schemas = {
        "Reservation": {"type": "object", "properties": {
            "_id": {"type": "string"}, "owner": {"type": "string", "nullable": True},
            "job_id": {"type": "string", "nullable": True}, "count": {"type": "integer"},
            "hostnames": {"type": "array", "items": {"type": "string"}, "nullable": True},
            "state": {"type": "string", "enum": list(RESERVATION_STATES)},
            "expires": {"type": "string", "nullable": True},
            "where": {"type": "object", "additionalProperties": True, "nullable": True},
            "lease_seconds": {"type": "integer", "nullable": True}, "reason": {"type": "string", "nullable": True},
            "user": {"type": "string", "nullable": True}, "_created": {"type": "string"},
            "_updated": {"type": "string"},
            "position": {"type": "integer", "description": "place in line (1: next), only while queued"},
            "queued_at": {"type": "string", "description": "only on requests made with a wait"},
            "wait_until": {"type": "string"}, "wait_seconds": {"type": "integer"},
            "granted_at": {"type": "string", "nullable": True}, "ended": {"type": "string", "nullable": True},
            "_links": {"type": "object", "properties": {"self": {"type": "object", "properties": {
                "href": {"type": "string"}}}}}}},
        "ReservationList": {"type": "object", "properties": {"_items": {"type": "array", "items": {
            "$ref": "#/components/schemas/Reservation"}}}},
        "DryRun": {"type": "object", "properties": {
            "would_reserve": {"type": "array", "items": {"type": "string"}}, "matching": {"type": "integer"},
            "idle": {"type": "integer"}, "available": {"type": "integer"},
            "earmarked": {"type": "integer",
                          "description": "unclaimed idle machines held for requests waiting in line"}}},
        "Released": {"type": "object", "properties": {
            "released": {"type": "array", "items": {"type": "string"}},
            "reservations": {"type": "array", "items": {"type": "string"}},
            "state": {"type": "string", "enum": ["cancelled", "timed_out"],
                      "description": "only when the reservation was queued (or was cancelled or timed out)"}}},
        "Sweep": {"type": "object", "properties": {
            "expired": {"type": "integer"}, "repaired": {"type": "integer"},
            "released": {"type": "array", "items": {"type": "string"}},
            "pxe_failed": {"type": "integer", "description": "machines in pxe over RM_PXE_TIMEOUT, now pxe_failed"},
            "queue": {"type": "object", "description": "only when its granting pass did something", "properties": {
                "granted": {"type": "array", "items": {"type": "string"}},
                "timed_out": {"type": "array", "items": {"type": "string"}}}}}},
    }
    return paths, schemas, [{"name": "reservations", "description": "reserve machines race-free (or wait in the "
                                                                     "queue), release them, extend leases"}]


def init_app(app):
    """Register the reservation routes, and the queue's triggers on machine writes."""
    register(app, *_openapi())
    app.on_inserted_machines += _machines_changed
    app.on_updated_machines += _machines_changed
    app.on_replaced_machines += _machines_changed
    app.register_blueprint(bp)
