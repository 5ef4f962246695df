"""/reservations: reserve machines all or nothing (or wait in the queue), release, extend, heartbeat, sweep.

The routes translate HTTP to the lifecycles of core (reserving, ending, queue, dryrun, sweep); what
those refuse (core.errors.AllocationError) is answered by the one handler in api/errors.py.
"""

import datetime
import time

import pymongo
from flask import Blueprint, current_app, jsonify, request

from ...core import dryrun, ending, queue, reserving, sweep
from ...core.context import Actor
from ...core.history import COLLECTION as HISTORY
from ...core.pending import await_settled
from ...core.store import RESERVATIONS
from ...schema import RESERVATION_STATES
from .. import slots
from ..auth import require_role
from ..bodies import validate
from ..db import core
from ..errors import error_response, loads_strict
from ..eveglue import on
from ..openapi import IDEMPOTENCY, WRITE_ERRORS, answer, body_ref, error_responses, op, query, register
from ..responses import created, idempotency_key, invalid
from ..upkeep import KICK_WAIT, kick, observe_grants

bp = Blueprint("reservations", __name__)

PUBLIC_FIELDS = ("_id", "owner", "job_id", "count", "hostnames", "state", "expires", "where", "lease_seconds",
                 "heartbeat_seconds", "heartbeat_due", "priority", "reason", "user", "granted_at", "ended",
                 "end_reason", "_created", "_updated")
QUEUE_FIELDS = ("queued_at", "wait_until", "wait_seconds", "eta", "blocked_by", "why")
RENDERED_FIELDS = PUBLIC_FIELDS + QUEUE_FIELDS + ("position", "_links")  # every field render() may give
LONG_POLL_MAX = 60  # s a GET ?wait= may hold a worker thread (below any worker timeout)
LONG_POLL_EVERY = 0.1
PAGE_MAX = 1000


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
    if isinstance(body.get("blocked_by"), dict):
        body["blocked_by"] = {"reservations": [{"_id": b["_id"], "expires": b["expires"].strftime(fmt)
                                                if isinstance(b.get("expires"), datetime.datetime) else None}
                                               for b in body["blocked_by"].get("reservations", [])],
                              "requests": body["blocked_by"].get("requests", [])}
    if body["priority"] is None:
        body["priority"] = 50
    if res.get("state") == "queued":
        body["position"] = place if place is not None else queue.position(queue.waiting(core()), res["_id"])
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


def _flag(name):
    return request.args.get(name, "").lower() in ("1", "true", "yes")


def _actor(user):
    return Actor(user, (request.args.get("reason") or "")[:1000] or None)


# The most priority each role may ask for (403 beyond, naming the limit).
PRIORITY_LIMITS = {"operator": 50, "admin": 100}


@bp.post("/reservations")
def create():
    """Reserve machines (or, with ?dry_run=1, say what would be reserved, or when)."""
    user = require_role("operator", "admin")
    body = _json_body()
    if body is None:
        return error_response(400, "body must be a JSON object")
    req, issues = validate("reservation", body, user["username"])
    if issues:
        return invalid("reservation", issues)
    limit = PRIORITY_LIMITS.get(user["role"], 0)
    if req["priority"] > limit:
        return error_response(403, f"priority {req['priority']} is above {limit}, the most a {user['role']} may ask "
                                   "for (an admin may ask for any)")
    wait_seconds = req.pop("wait_seconds")
    here = core()
    if _flag("dry_run"):
        return jsonify(dryrun.explain(here, req, user["username"], wait_seconds)), 200
    res, replayed = reserving.reserve(here, req, user["username"], idempotency_key(), wait_seconds)
    if res["state"] == "queued" and not replayed:
        # Granted at once if it can be met in its turn (a pass waits for one already under way).
        served = queue.serve(here, wait=KICK_WAIT)
        observe_grants(served)
        # A granter elsewhere may be granting it right now: answer how that ends.
        res = await_settled(here, RESERVATIONS, res["_id"], KICK_WAIT) or res
    return _answer(res)


def _page():
    try:
        page = int(request.args.get("page", 1))
        size = int(request.args.get("max_results", PAGE_MAX))
    except ValueError:
        return None, None, error_response(400, "page and max_results must be whole numbers")
    if page < 1 or not 1 <= size <= PAGE_MAX:
        return None, None, error_response(400, f"page must be 1 or more, max_results 1 to {PAGE_MAX}")
    return page, size, None


def _paged(items, total, page, size, path, args):
    links = {"self": {"href": path}}
    if page * size < total:
        query = "&".join(f"{k}={v}" for k, v in dict(args, page=page + 1, max_results=size).items())
        links["next"] = {"href": f"{path}?{query}"}
    return jsonify({"_items": items, "_meta": {"page": page, "max_results": size, "total": total},
                    "_links": links})


@bp.get("/reservations")
def listing():
    """List reservations, newest first (the queue in its order), filtered by job_id, owner and state; paged."""
    query = {field: request.args[field] for field in ("job_id", "owner", "state") if request.args.get(field)}
    if query.get("state") and query["state"] not in RESERVATION_STATES:
        return error_response(400, f"state must be one of {', '.join(RESERVATION_STATES)}")
    page, size, refused = _page()
    if refused is not None:
        return refused
    here = core()
    skip = (page - 1) * size
    if query.get("state") == "queued":
        # The line, in its order, each with its place in it.
        everyone = queue.waiting(here)
        places = {r["_id"]: n for n, r in enumerate(everyone, 1)}
        line = [r for r in everyone if all(r.get(f) == v for f, v in query.items())]
        items = [render(r, places[r["_id"]]) for r in line[skip:skip + size]]
        return _paged(items, len(line), page, size, "/reservations", query)
    collection = here.db[RESERVATIONS]
    found = list(collection.find(query).sort([("_created", pymongo.DESCENDING), ("_id", pymongo.DESCENDING)])
                 .skip(skip).limit(size))
    total = skip + len(found) if len(found) < size else collection.count_documents(query)
    places = {}
    if any(r.get("state") == "queued" for r in found):
        places = {r["_id"]: n for n, r in enumerate(queue.waiting(here), 1)}
    return _paged([render(r, places.get(r["_id"])) for r in found], total, page, size, "/reservations", query)


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
    here = core()
    res = here.db[RESERVATIONS].find_one({"_id": rid})
    if res is None:
        return error_response(404, f"no reservation {rid}")
    if wait:
        # A long poll holds its worker thread: it takes one of the process's long-request slots, or is
        # answered 503 with Retry-After at once (slots.py), so waiting clients never starve the others.
        with slots.take("long-poll"):
            res = _await_change(here, res, wait, request.args.get("state"))
    return jsonify(render(res))


def _await_change(here, res, wait, seen=None):
    # Changed from the state the client last saw (?state=), else from the one found now: a change
    # that landed between two polls is answered at once. `pending` (a grant under way) is no change.
    seen = {seen or res["state"], "pending"}
    deadline = time.monotonic() + wait
    while res["state"] in seen and time.monotonic() < deadline:
        time.sleep(LONG_POLL_EVERY)
        res = here.db[RESERVATIONS].find_one({"_id": res["_id"]}) or res
    return res


@bp.get("/reservations/<rid>/history")
def history(rid):
    """Answer the events of one reservation (queued, granted, extended, released...), oldest first; paged."""
    page, size, refused = _page()
    if refused is not None:
        return refused
    db = core().db
    if db[RESERVATIONS].find_one({"_id": rid}, {"_id": 1}) is None:
        return error_response(404, f"no reservation {rid}")
    fmt = current_app.config["DATE_FORMAT"]
    query = {"resource": "reservations", "item_id": rid}
    skip = (page - 1) * size
    items = []
    for e in db[HISTORY].find(query, {"_id": 0, "resource": 0}).sort([("at", 1), ("_id", 1)]).skip(skip).limit(size):
        e["at"] = e["at"].strftime(fmt)
        for change in (e.get("changes") or {}).values():
            for side in ("before", "after"):
                if isinstance(change.get(side), datetime.datetime):
                    change[side] = change[side].strftime(fmt)
        items.append(e)
    total = skip + len(items) if len(items) < size else db[HISTORY].count_documents(query)
    return _paged(items, total, page, size, f"/reservations/{rid}/history", {})


@bp.delete("/reservations/<rid>")
def release_one(rid):
    """Release one reservation, or cancel it while it waits in line; again: frees nothing and is fine."""
    user = require_role("operator", "admin")["username"]
    outcome = ending.release_or_cancel(core(), rid, _actor(user))
    if outcome is None:
        return error_response(404, f"no reservation {rid}")
    if outcome.ended:
        kick()  # what was freed, or earmarked for the cancelled request, may go to the next in line
    return jsonify(outcome.body())


@bp.delete("/reservations")
def release_job():
    """Release every active reservation of ?job_id=, and cancel its queued ones (also those granted meanwhile)."""
    user = require_role("operator", "admin")["username"]
    job_id = request.args.get("job_id")
    if not job_id:
        return error_response(400, "give ?job_id= to release every reservation of a job")
    released, ids = ending.release_job(core(), job_id, _actor(user))
    if ids:
        kick()
    return jsonify({"released": released, "reservations": ids})


@bp.post("/reservations/<rid>/extend")
def extend(rid):
    """Extend a reservation's lease to lease_seconds from now, and renew (or change) its heartbeat."""
    user = require_role("operator", "admin")["username"]
    body = _json_body()
    if body is None:
        return error_response(400, "body must be a JSON object")
    req, issues = validate("extension", body)
    if issues:
        return invalid("extension", issues)
    if body.get("lease_seconds") is None and "heartbeat_seconds" not in body:
        return invalid("extension", {"lease_seconds": "give lease_seconds, heartbeat_seconds or both"})
    beat = req["heartbeat_seconds"] if "heartbeat_seconds" in body else ...
    res = ending.extend(core(), rid, req["lease_seconds"], Actor(user, req["reason"]), heartbeat_seconds=beat,
                        exact=req["exact"])
    return jsonify(render(res))


@bp.post("/reservations/<rid>/heartbeat")
def beat(rid):
    """Renew a reservation's heartbeat window (nothing is due while it waits in line)."""
    require_role("operator", "admin")
    return jsonify(render(ending.heartbeat(core(), rid)))


@bp.post("/reservations/sweep")
def run_sweep():
    """Expire leases and repair half-done reservations and allocations."""
    user = require_role("operator", "admin")
    grace = None
    if request.args.get("grace") is not None:
        # Shortening the grace period risks undoing live requests: an admin's call, after a restart.
        if user["role"] != "admin":
            return error_response(403, "only an admin may set ?grace=")
        try:
            # At most ten years: a timedelta past ~2.7 million years overflows (it was a 500).
            grace = min(max(0, int(request.args["grace"])), 10 * 366 * 86400)
        except ValueError:
            return error_response(400, "grace must be a number of seconds")
    return jsonify(sweep.sweep(core(), grace, Actor(user["username"])))


def _machines_changed(*args):
    # Machines added, or made idle by a plain write: queued requests may be met now.
    docs = args[0] if isinstance(args[0], list) else [dict(args[1], **args[0])] if len(args) > 1 else [args[0]]
    if any(d.get("state") == "idle" for d in docs if isinstance(d, dict)):
        kick()


PAGING = [query("page", "the page (from 1)", {"type": "integer", "minimum": 1}),
          query("max_results", f"items per page (at most {PAGE_MAX})",
                {"type": "integer", "minimum": 1, "maximum": PAGE_MAX})]


def _openapi():
    """The OpenAPI of the reservation routes."""
    rid = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
    reason = query("reason", "why: kept in the history")
    paths = {
        "/reservations": {
            "get": op("listReservations", "List reservations, newest first (state=queued: the line, in order)",
                      "reservations", parameters=[
                          query("job_id", "only this job's", field="job_id"),
                          query("owner", "only this owner's", field="owner"),
                          query("state", "only those in this state (queued: the line, in order)",
                                {"type": "string", "enum": list(RESERVATION_STATES)}, field="state")] + PAGING,
                      responses={"200": answer("ReservationList", "reservations"), **error_responses(400, 503)}),
            "post": op("reserve", "Reserve idle machines", "reservations", scope="reserve", parameters=[
                IDEMPOTENCY, query("dry_run", "1 (or true, yes): say what would be reserved (or when), reserve nothing",
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
            "reservationHistory", "Events of a reservation (queued, granted, extended, released, expired, "
            "cancelled, timed_out), oldest first", "reservations", parameters=PAGING,
            responses={"200": answer("History", "entries, oldest first"), **error_responses(400, 404, 503)})},
        "/reservations/{id}/heartbeat": {"parameters": [rid], "post": op(
            "heartbeat", "Renew a reservation's heartbeat window (a queued one: nothing due yet)", "reservations",
            scope="reserve", responses={"200": answer("Reservation", "the reservation, heartbeat_due renewed"),
                                   **error_responses(404, 409), **WRITE_ERRORS})},
        "/reservations/{id}/extend": {"parameters": [rid], "post": op(
            "extend", "Extend a reservation's lease (and renew or change its heartbeat)", "reservations",
            scope="reserve", requestBody=body_ref("Extend"),
            responses={"200": answer("Reservation", "extended"), **error_responses(404, 409), **WRITE_ERRORS})},
    }
    schemas = {
        "Reservation": {"type": "object", "properties": {
            "_id": {"type": "string"}, "owner": {"type": "string", "nullable": True},
            "job_id": {"type": "string", "nullable": True}, "count": {"type": "integer"},
            "hostnames": {"type": "array", "items": {"type": "string"}, "nullable": True},
            "state": {"type": "string", "enum": list(RESERVATION_STATES)},
            "expires": {"type": "string", "nullable": True, "description": "when the lease ends"},
            "where": {"type": "object", "additionalProperties": True, "nullable": True},
            "lease_seconds": {"type": "integer", "nullable": True}, "reason": {"type": "string", "nullable": True},
            "heartbeat_seconds": {"type": "integer", "nullable": True,
                                  "description": "the heartbeat period, when heartbeats are expected"},
            "heartbeat_due": {"type": "string", "nullable": True,
                              "description": "the next heartbeat is due by then, or the reservation expires"},
            "priority": {"type": "integer", "minimum": 0, "maximum": 100},
            "end_reason": {"type": "string", "nullable": True, "description": "why it ended (who, or what ran out)"},
            "user": {"type": "string", "nullable": True}, "_created": {"type": "string"},
            "_updated": {"type": "string"},
            "position": {"type": "integer", "description": "place in line (1: next), only while queued"},
            "queued_at": {"type": "string", "description": "only on requests made with a wait"},
            "wait_until": {"type": "string"}, "wait_seconds": {"type": "integer"},
            "eta": {"type": "string", "nullable": True,
                    "description": "while queued: when it will start (the leases it waits for end), or null when "
                                   "that cannot be known"},
            "blocked_by": {"type": "object", "description": "while queued: what it waits for", "properties": {
                "reservations": {"type": "array", "items": {"type": "object", "properties": {
                    "_id": {"type": "string"}, "expires": {"type": "string", "nullable": True}}},
                    "description": "the reservations holding what it waits for, with their lease ends"},
                "requests": {"type": "array", "items": {"type": "string"},
                             "description": "the requests ahead of it whose earmarks it waits behind"}}},
            "why": {"type": "string", "nullable": True, "description": "while queued: why it waits, for a person"},
            "granted_at": {"type": "string", "nullable": True}, "ended": {"type": "string", "nullable": True},
            "_links": {"type": "object", "properties": {"self": {"type": "object", "properties": {
                "href": {"type": "string"}}}}}}},
        "ReservationList": {"type": "object", "properties": {
            "_items": {"type": "array", "items": {"$ref": "#/components/schemas/Reservation"}},
            "_meta": {"type": "object", "properties": {"page": {"type": "integer"}, "max_results": {"type": "integer"},
                                                       "total": {"type": "integer"}}},
            "_links": {"type": "object", "description": "next: the next page, when there is one"}}},
        "DryRun": {"type": "object", "properties": {
            "would_reserve": {"type": "array", "items": {"type": "string"}}, "matching": {"type": "integer"},
            "idle": {"type": "integer"}, "available": {"type": "integer"},
            "earmarked": {"type": "integer",
                          "description": "unclaimed idle machines held for requests waiting in line"}}},
        "Released": {"type": "object", "properties": {
            "released": {"type": "array", "items": {"type": "string"}},
            "reservations": {"type": "array", "items": {"type": "string"}},
            "state": {"type": "string", "enum": list(RESERVATION_STATES),
                      "description": "the reservation's state afterwards (by id only)"}}},
        "Sweep": {"type": "object", "properties": {
            "expired": {"type": "integer"}, "repaired": {"type": "integer"},
            "released": {"type": "array", "items": {"type": "string"}},
            "pxe_failed": {"type": "integer", "description": "machines in pxe over RM_PXE_TIMEOUT, now pxe_failed"},
            "leases_given": {"type": "integer",
                             "description": "active reservations stored without a lease, given the default one"},
            "queue": {"type": "object", "description": "only when its granting pass did something", "properties": {
                "granted": {"type": "array", "items": {"type": "string"}},
                "timed_out": {"type": "array", "items": {"type": "string"}}}}}},
    }
    return paths, schemas, [{"name": "reservations", "description": "reserve machines race-free (or wait in the "
                                                                     "queue), release them, extend leases"}]


def init_app(app):
    """Register the reservation routes, their indexes, and the queue's triggers on machine writes."""
    register(app, *_openapi())
    indexes = app.extensions["rm_indexes"]
    for field in ("state", "job_id", "owner"):  # listings, the line, ending by job, the upkeep's scan
        indexes.add(RESERVATIONS, [(field, 1)], name=f"{field}_1")
    for event in ("inserted", "updated", "replaced"):
        on(app, event, _machines_changed, "machines")
    app.register_blueprint(bp)
