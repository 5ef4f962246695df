"""/reservations: reserve machines all or nothing, release, extend leases, sweep."""

import datetime

import pymongo
from flask import Blueprint, current_app, jsonify, request

from ...core import allocation, sweep
from ...core.allocation import RESERVATIONS, AllocationError
from ...core.constraints import check_extension, check_reservation
from ..auth import require_role
from ..db import database
from ..errors import error_response, loads_strict
from ..responses import created, idempotency_key, invalid

bp = Blueprint("reservations", __name__)

PUBLIC_FIELDS = ("_id", "owner", "job_id", "count", "hostnames", "state", "expires", "where", "lease_seconds",
                 "reason", "user", "_created", "_updated")
DEFAULT_MAX_COUNT = 1000


def render(res):
    """Return the JSON body of a reservation."""
    fmt = current_app.config["DATE_FORMAT"]
    body = {}
    for field in PUBLIC_FIELDS:
        value = res.get(field)
        body[field] = value.strftime(fmt) if isinstance(value, datetime.datetime) else value
    if isinstance(body["where"], str):
        body["where"] = loads_strict(body["where"])
    return body


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
    max_count = int(current_app.config.get("RESERVATION_MAX_COUNT", DEFAULT_MAX_COUNT))
    req, issues = check_reservation(body, user, max_count)
    if issues:
        return invalid("reservation", issues)
    db = database()
    if _flag("dry_run"):
        return jsonify(allocation.explain(db, req)), 200
    key = idempotency_key()
    try:
        res, _replayed = allocation.reserve(db, req, user, key, sweep.grace_seconds(current_app),
                                            current_app.config.get("IDEMPOTENCY_WAIT_SECONDS", 10))
    except AllocationError as e:
        return _failure(e)
    return created(render(res), f"/reservations/{res['_id']}")


@bp.get("/reservations")
def listing():
    """List reservations, newest first, filtered by job_id, owner and state."""
    query = {field: request.args[field] for field in ("job_id", "owner", "state") if request.args.get(field)}
    try:
        limit = max(1, min(int(request.args.get("max_results", 1000)), 1000))
    except ValueError:
        return error_response(400, "max_results must be an integer")
    cursor = database()[RESERVATIONS].find(query).sort("_created", pymongo.DESCENDING).limit(limit)
    return jsonify({"_items": [render(r) for r in cursor]})


@bp.get("/reservations/<rid>")
def show(rid):
    """Answer one reservation."""
    res = database()[RESERVATIONS].find_one({"_id": rid})
    if res is None:
        return error_response(404, f"no reservation {rid}")
    return jsonify(render(res))


@bp.delete("/reservations/<rid>")
def release_one(rid):
    """Release one reservation; releasing it again frees nothing and is fine."""
    user = require_role("operator", "admin")["username"]
    try:
        released = allocation.release(database(), rid, user, request.args.get("reason"))
    except AllocationError as e:
        return _failure(e)
    if released is None:
        return error_response(404, f"no reservation {rid}")
    return jsonify({"released": released, "reservations": [rid] if released else []})


@bp.delete("/reservations")
def release_job():
    """Release every active reservation of ?job_id=."""
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
    return jsonify({"released": sorted(released), "reservations": ids})


@bp.post("/reservations/<rid>/extend")
def extend(rid):
    """Extend a reservation's lease to lease_seconds from now."""
    require_role("operator", "admin")
    body = _json_body()
    if body is None:
        return error_response(400, "body must be a JSON object")
    lease_seconds, issues = check_extension(body)
    if issues:
        return invalid("extension", issues)
    try:
        res = allocation.extend(database(), rid, lease_seconds)
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


def init_app(app):
    """Register the reservation routes and the guards on machines."""
    app.register_blueprint(bp)
