"""/webhooks: register, list and delete hooks, read their delivery log, redeliver (admins only).

The records and the delivery protocol: core/webhooks.py; the worker that sends: hookworker.py;
where requests may go and how they are signed: egress.py.
"""

import copy
import datetime
import json
import logging

from flask import Blueprint, current_app, jsonify, request

from ...core import webhooks
from ...core.clock import utcnow
from .. import egress, hookworker
from ..auth import require_role
from ..bodies import validate
from ..db import database
from ..errors import error_response
from ..openapi import CREDENTIALS, WRITE_ERRORS, answer, body_ref, error_responses, register
from ..responses import created, invalid

log = logging.getLogger(__name__)

bp = Blueprint("webhooks", __name__)

MAX_DELIVERIES = 100


def _render(doc, secret=None):
    fmt = current_app.config["DATE_FORMAT"]
    body = {}
    for field in webhooks.PUBLIC_FIELDS:
        value = doc.get(field)
        body[field] = value.strftime(fmt) if isinstance(value, datetime.datetime) else value
    body["where"] = _where(doc)
    body["lost"] = doc.get("lost", 0)
    if secret is not None:
        body["secret"] = secret
    return body


def _where(doc):
    return json.loads(doc["where"]) if doc.get("where") else None


def _render_delivery(doc):
    fmt = current_app.config["DATE_FORMAT"]

    def when(value):
        return value.strftime(fmt) if isinstance(value, datetime.datetime) else value

    log_entries = [dict(e, at=when(e.get("at"))) for e in doc.get("log") or []]
    return {"_id": doc["_id"], "hook": doc["hook"], "event": doc["event"], "type": doc["type"],
            "state": doc["state"], "attempts": doc.get("attempts", 0), "created": when(doc.get("created")),
            "next_at": when(doc.get("next_at")) if doc["state"] == "pending" else None,
            "delivered_at": when(doc.get("delivered_at")), "last_status": doc.get("last_status"),
            "last_error": doc.get("last_error"), "log": log_entries,
            "worker": doc.get("worker") if doc["state"] == "delivering" else None}


def _no_hook(hook_id):
    return error_response(404, f"no webhook {str(hook_id)[:64]}")


@bp.post("/webhooks")
def create():
    """Register a hook; its secret is in this answer and nowhere else."""
    user = require_role("admin")
    body = request.get_json(silent=True) if request.content_length else {}
    if not isinstance(body, dict):
        return error_response(400, "body must be a JSON object")
    req, issues = validate("webhook", body)
    if not issues:
        problem = webhooks.check_where(req["where"])
        if problem:
            issues["where"] = problem
        try:
            egress.check(hookworker.worker().allow, req["url"])
        except egress.Refused as e:
            issues["url"] = str(e)
    if issues:
        return invalid("webhook", issues)
    hook, secret = webhooks.create(database(), req["url"], req["events"], req["where"], req["description"],
                                   user["username"], utcnow())
    log.info("webhook %s to %s (%s) registered by %s", hook["_id"], hook["url"], ", ".join(hook["events"]),
             user["username"])
    response = created(_render(hook, secret))
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/webhooks")
def listing():
    """List the hooks (never their secrets)."""
    require_role("admin")
    return jsonify({"_items": [_render(h) for h in webhooks.listing(database())]})


@bp.get("/webhooks/<hook_id>")
def one(hook_id):
    """Show one hook."""
    require_role("admin")
    hook = webhooks.get(database(), hook_id)
    return jsonify(_render(hook)) if hook else _no_hook(hook_id)


@bp.delete("/webhooks/<hook_id>")
def delete(hook_id):
    """Delete a hook and its delivery log: nothing more is sent to it."""
    user = require_role("admin")
    if not webhooks.delete(database(), hook_id):
        return _no_hook(hook_id)
    log.info("webhook %s deleted by %s", hook_id, user["username"])
    return "", 204


@bp.get("/webhooks/<hook_id>/deliveries")
def deliveries(hook_id):
    """Show a hook's deliveries, newest event first (?state=pending|delivering|delivered|failed)."""
    require_role("admin")
    db = database()
    if webhooks.get(db, hook_id) is None:
        return _no_hook(hook_id)
    state = request.args.get("state") or None
    if state is not None and state not in webhooks.STATES:
        return error_response(400, f"state must be one of {', '.join(webhooks.STATES)}")
    try:
        limit = int(request.args.get("max_results", MAX_DELIVERIES))
    except ValueError:
        return error_response(400, "max_results must be a whole number")
    limit = min(max(limit, 1), MAX_DELIVERIES)
    return jsonify({"_items": [_render_delivery(d) for d in webhooks.deliveries(db, hook_id, state, limit)]})


@bp.post("/webhooks/<hook_id>/deliveries/<delivery_id>/redeliver")
def redeliver(hook_id, delivery_id):
    """Send a delivery again (delivered or failed ones too), with a fresh count of attempts."""
    user = require_role("admin")
    try:
        doc = webhooks.redeliver(database(), hook_id, delivery_id, utcnow())
    except webhooks.Busy as e:
        return error_response(409, str(e))
    if doc is None:
        return error_response(404, f"webhook {str(hook_id)[:64]} has no delivery {str(delivery_id)[:80]}")
    log.info("webhook delivery %s queued again by %s", delivery_id, user["username"])
    return jsonify(_render_delivery(doc)), 202


def _op(op_id, summary, **rest):
    return {"operationId": op_id, "summary": summary, "tags": ["webhooks"], "security": copy.deepcopy(CREDENTIALS),
            "description": "Needs role admin; a token needs scope admin.", "x-roles": ["admin"],
            "x-token-scopes": ["admin"], **rest}


def _openapi():
    """The OpenAPI of the webhook routes."""
    hid = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
    did = {"name": "delivery", "in": "path", "required": True, "schema": {"type": "string"}}
    admin_errors = error_responses(401, 403, 404, 503)
    paths = {
        "/webhooks": {
            "get": _op("listWebhooks", "List the webhooks (never their secrets)",
                       responses={"200": answer("WebhookList", "the hooks"), **error_responses(401, 403, 503)}),
            "post": _op("createWebhook", "Register a webhook: its secret is shown in this answer only",
                        requestBody=body_ref("WebhookRequest"),
                        responses={"201": answer("WebhookCreated", "registered"), **WRITE_ERRORS}),
        },
        "/webhooks/{id}": {"parameters": [hid],
                           "get": _op("getWebhook", "Show one webhook",
                                      responses={"200": answer("Webhook", "the hook"), **admin_errors}),
                           "delete": _op("deleteWebhook", "Delete a webhook and its delivery log",
                                         responses={"204": {"description": "deleted"}, **admin_errors})},
        "/webhooks/{id}/deliveries": {"parameters": [hid], "get": _op(
            "listWebhookDeliveries", "A webhook's deliveries, newest event first", parameters=[
                {"name": "state", "in": "query", "schema": {"type": "string", "enum": list(webhooks.STATES)}},
                {"name": "max_results", "in": "query", "schema": {"type": "integer", "minimum": 1,
                                                                   "maximum": MAX_DELIVERIES}}],
            responses={"200": answer("DeliveryList", "deliveries"), **error_responses(400, 401, 403, 404, 503)})},
        "/webhooks/{id}/deliveries/{delivery}/redeliver": {"parameters": [hid, did], "post": _op(
            "redeliverWebhook", "Send a delivery again, with a fresh count of attempts",
            responses={"202": answer("Delivery", "queued to be sent again"),
                       **error_responses(401, 403, 404, 409, 503)})},
    }
    hook = {"type": "object", "properties": {
        "_id": {"type": "string"}, "url": {"type": "string"}, "events": {"type": "array", "items": {"type": "string"}},
        "where": {"type": "object", "nullable": True, "additionalProperties": True},
        "description": {"type": "string", "nullable": True}, "created": {"type": "string"},
        "created_by": {"type": "string"}, "cursor": {"type": "integer", "description": "the last event id given "
                                                                                         "to it"},
        "lost": {"type": "integer", "description": "events dropped by retention before it was given them"}}}
    delivery = {"type": "object", "properties": {
        "_id": {"type": "string"}, "hook": {"type": "string"}, "event": {"type": "integer"},
        "type": {"type": "string"}, "state": {"type": "string", "enum": list(webhooks.STATES)},
        "attempts": {"type": "integer"}, "created": {"type": "string"},
        "next_at": {"type": "string", "nullable": True}, "delivered_at": {"type": "string", "nullable": True},
        "last_status": {"type": "integer", "nullable": True}, "last_error": {"type": "string", "nullable": True},
        "worker": {"type": "string", "nullable": True, "description": "host:pid sending it (while delivering)"},
        "log": {"type": "array", "items": {"type": "object", "properties": {
            "at": {"type": "string"}, "status": {"type": "integer", "nullable": True},
            "error": {"type": "string", "nullable": True}, "ms": {"type": "integer"}}}}}}
    schemas = {
        "Webhook": hook,
        "WebhookCreated": {"allOf": [{"$ref": "#/components/schemas/Webhook"}, {"type": "object", "properties": {
            "secret": {"type": "string", "description": "signs every delivery (X-RM-Signature): in this answer "
                                                        "only"}}}]},
        "WebhookList": {"type": "object", "properties": {"_items": {"type": "array", "items": {
            "$ref": "#/components/schemas/Webhook"}}}},
        "Delivery": delivery,
        "DeliveryList": {"type": "object", "properties": {"_items": {"type": "array", "items": {
            "$ref": "#/components/schemas/Delivery"}}}},
    }
    tags = [{"name": "webhooks", "description": "events POSTed to your URLs, signed (X-RM-Signature), at least "
                                                "once, with retries"}]
    return paths, schemas, tags


def init_app(app):
    """Register the webhook routes, their worker and the indexes they read by."""
    register(app, *_openapi())
    hookworker.init_app(app)
    indexes = app.extensions["rm_indexes"]
    indexes.add(webhooks.DELIVERIES, [("hook", 1), ("event", -1)], name="hook_event")
    indexes.add(webhooks.DELIVERIES, [("state", 1), ("next_at", 1)], name="state_next_at")
    app.register_blueprint(bp)

