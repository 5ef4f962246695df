"""History: who changed which machine or address, when, what, and why.

Every change is one document in the `history` collection. Allocation code calls
record() itself; plain POST/PATCH/PUT/DELETE through Eve are recorded by hooks.
A write made through Eve may carry a reason in the `X-Reason` header.
"""

import datetime

import pymongo
from bson import ObjectId
from flask import Blueprint, current_app, has_request_context, jsonify, request

from .auth import current_user
from .db import database
from .errors import error_response
from .lookup import name_filter
from .settings import NAME_FIELDS

COLLECTION = "history"
META_FIELDS = ("_id", "_etag", "_created", "_updated", "_deleted", "_version", "_latest_version")
MAX_RESULTS = 1000

bp = Blueprint("history", __name__)


def utcnow():
    """Return the time as Eve stores it: tz-aware UTC, whole seconds."""
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)


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


def diff(before, after):
    """Return {field: {"before", "after"}} for the fields that differ (meta fields aside)."""
    changes = {}
    for field in sorted(set(before) | set(after)):
        if field in META_FIELDS:
            continue
        old, new = before.get(field), after.get(field)
        if old != new:
            changes[field] = {"before": old, "after": new}
    return changes


def entry(resource, doc, action, changes, user=None, reason=None, job_id=None, at=None):
    """Return the history entry for the machine or address `doc` (not stored)."""
    return {
        "resource": resource,
        "name": doc.get(NAME_FIELDS[resource]),
        "item_id": str(doc.get("_id")),
        "at": at or utcnow(),
        "user": user,
        "action": action,
        "changes": changes,
        "reason": reason,
        "job_id": job_id if job_id is not None else doc.get("job_id"),
    }


def record(db, resource, doc, action, changes, user=None, reason=None, job_id=None, at=None):
    """Store one history entry for the machine or address `doc`."""
    if not changes and action in ("update",):
        return
    db[COLLECTION].insert_one(entry(resource, doc, action, changes, user, reason, job_id, at))


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
        entries = [entry(resource, doc, "create", diff({}, doc), user, reason, at=at) for doc in documents]
        if entries:
            database()[COLLECTION].insert_many(entries, ordered=False)

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


def init_app(app):
    """Record every Eve write to machines and addresses, and serve the history routes."""
    # Used by MongoDB; FerretDB scans anyway but accepts it.
    app.extensions["rm_indexes"].add(COLLECTION, [("resource", 1), ("name", 1), ("at", -1)], name="item_at")
    for resource in NAME_FIELDS:
        inserted, updated, replaced, deleted = _eve_hooks(resource)
        for event, fn in (("inserted", inserted), ("updated", updated), ("replaced", replaced),
                          ("deleted_item", deleted)):
            hook = getattr(app, f"on_{event}_{resource}")
            hook += fn
    app.register_blueprint(bp)
