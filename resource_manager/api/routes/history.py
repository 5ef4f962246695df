"""History routes and hooks: who changed which machine or address (the records: core/history.py).

Plain POST/PATCH/PUT/DELETE through Eve are recorded by hooks; a write may carry a reason in the
`X-Reason` header.
"""

import datetime

import pymongo
from bson import ObjectId
from flask import Blueprint, current_app, has_request_context, jsonify, request

from ...core.history import COLLECTION, diff, entry, record, record_many, utcnow
from ...schema import NAME_FIELDS
from ..auth import current_user
from ..db import database
from ..errors import error_response
from ..lookup import name_filter
from ..openapi import answer, error_responses, op, register

MAX_RESULTS = 1000


bp = Blueprint("history", __name__)


def request_user():
    """Return the authenticated user's name, or None outside a request."""
    if not has_request_context():
        return None
    user = current_user()
    return user["username"] if user else None


def request_reason():
    """Return the X-Reason header of the current request, if any."""
    if not has_request_context():
        return None
    return (request.headers.get("X-Reason") or "")[:1000] or None


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, datetime.datetime):
        return value.strftime(current_app.config["DATE_FORMAT"])
    if isinstance(value, ObjectId):
        return str(value)
    return value


def _eve_hooks(resource):
    def record_here(doc, action, changes, job_id=None):
        record(database(), resource, doc, action, changes, request_user(), request_reason(), job_id)

    def inserted(documents):
        # One insert for a bulk POST's entries, not one round trip per document.
        user, reason, at = request_user(), request_reason(), utcnow()
        record_many(database(), [entry(resource, doc, "create", diff({}, doc), user, reason, at=at)
                                 for doc in documents])

    def updated(updates, original):
        after = dict(original)
        after.update(updates)
        record_here(after, "update", diff(original, after))

    def replaced(document, original):
        record_here(document, "update", diff(original, document))

    def deleted(original):
        record_here(original, "delete", diff(original, {}), job_id=original.get("job_id"))

    return inserted, updated, replaced, deleted


@bp.get("/<any(machines, 'public-addresses', 'private-addresses'):resource>/<path:name>/history")
def item_history(resource, name):
    """Answer the history of one machine or address, newest first."""
    filter_ = name_filter(resource, name)
    field = NAME_FIELDS[resource]
    if "_id" in filter_:  # the item's own _id (a name that looks like an ObjectId resolves to its item's)
        query = {"resource": resource, "item_id": str(filter_["_id"])}
    else:
        query = {"resource": resource, "name": filter_[field]}
    try:
        limit = min(int(request.args.get("max_results", MAX_RESULTS)), MAX_RESULTS)
    except ValueError:
        return error_response(400, "max_results must be an integer")
    cursor = database()[COLLECTION].find(query, {"_id": 0, "resource": 0, "item_id": 0})
    items = list(cursor.sort([("at", pymongo.DESCENDING), ("_id", pymongo.DESCENDING)]).limit(max(limit, 1)))
    return jsonify({"_items": _jsonable(items)})


def _history_path(kind, param):
    return {"parameters": [{"name": param, "in": "path", "required": True, "schema": {"type": "string"}}],
            "get": op(f"history{kind}", f"History of one of the {kind.lower()}", "history",
                      responses={"200": answer("History", "entries, newest first"), **error_responses(404, 503)})}


def _openapi():
    """The OpenAPI of the history routes."""
    paths = {
        "/machines/{hostname}/history": _history_path("Machine", "hostname"),
        "/public-addresses/{address}/history": _history_path("PublicAddress", "address"),
        "/private-addresses/{address}/history": _history_path("PrivateAddress", "address"),
    }
    schemas = {
        "HistoryEntry": {"type": "object", "properties": {
            "at": {"type": "string"}, "user": {"type": "string", "nullable": True},
            "action": {"type": "string", "enum": ["create", "update", "delete", "reserve", "release", "expire",
                                                  "allocate", "queued", "granted", "cancelled", "timed_out"]},
            "changes": {"type": "object", "additionalProperties": {"type": "object", "properties": {
                "before": {}, "after": {}}}},
            "reason": {"type": "string", "nullable": True}, "job_id": {"type": "string", "nullable": True}}},
        "History": {"type": "object", "properties": {"_items": {"type": "array", "items": {
            "$ref": "#/components/schemas/HistoryEntry"}}}},
    }
    return paths, schemas, [{"name": "history", "description": "who changed what, newest first"}]


def init_app(app):
    """Record every Eve write to machines and addresses, and serve the history routes."""
    register(app, *_openapi())
    # Used by MongoDB; FerretDB scans anyway but accepts it.
    app.extensions["rm_indexes"].add(COLLECTION, [("resource", 1), ("name", 1), ("at", -1)], name="item_at")
    for resource in NAME_FIELDS:
        inserted, updated, replaced, deleted = _eve_hooks(resource)
        for event, fn in (("inserted", inserted), ("updated", updated), ("replaced", replaced),
                          ("deleted_item", deleted)):
            hook = getattr(app, f"on_{event}_{resource}")
            hook += fn
    app.register_blueprint(bp)
