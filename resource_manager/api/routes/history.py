"""History routes and hooks: who changed which machine or address (the records: core/history.py).

Plain POST/PATCH/PUT/DELETE through Eve are recorded by hooks; a write may carry a reason in the
`X-Reason` header.
"""

import datetime
from urllib.parse import urlencode

import pymongo
from bson import ObjectId
from flask import Blueprint, current_app, has_request_context, jsonify, request

from ...core.context import Actor
from ...core.history import COLLECTION, diff, entry, record, record_many
from ...schema import NAME_FIELDS
from ..auth import current_user
from ..db import core, database
from ..errors import error_response
from ..eveglue import on
from ..lookup import name_filter
from ..openapi import answer, error_responses, op, query, register
from ..queryargs import MAX_PAGE, QueryError, check_positive

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
        here = core()
        record(here.db, resource, doc, action, changes, Actor(request_user(), request_reason(), job_id),
               at=here.now())

    def inserted(documents):
        # One insert for a bulk POST's entries, not one round trip per document.
        here = core()
        actor, at = Actor(request_user(), request_reason()), here.now()
        record_many(here.db, [entry(resource, doc, "create", diff({}, doc), actor, at) for doc in documents])

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
    """Answer the history of one machine or address, newest first, a page at a time.

    Paged as the collections are: `?max_results=` (at most PAGINATION_LIMIT, 1000) and `?page=`
    (pages of PAGINATION_DEFAULT, 100, when only it is given); a bare request answers the first
    page of PAGINATION_LIMIT. `_meta` has page, max_results and total; `_links.next` is there
    exactly when a page follows. Counting reads the item's entries, so it happens only when this
    page is full and more follow (otherwise the page itself says how many there are).
    """
    filter_ = name_filter(resource, name)
    field = NAME_FIELDS[resource]
    if "_id" in filter_:  # the item's own _id (a name that looks like an ObjectId resolves to its item's)
        query = {"resource": resource, "item_id": str(filter_["_id"])}
    else:
        query = {"resource": resource, "name": filter_[field]}
    config = current_app.config
    most = int(config.get("PAGINATION_LIMIT") or MAX_RESULTS)
    try:
        if "max_results" in request.args:
            check_positive("max_results", request.args["max_results"], 10**9)
        if "page" in request.args:
            check_positive("page", request.args["page"], MAX_PAGE)
    except QueryError as e:
        return error_response(400, str(e))
    if "max_results" in request.args:
        size = min(int(request.args["max_results"]), most)
    else:
        size = int(config.get("PAGINATION_DEFAULT") or 100) if "page" in request.args else most
    page = int(request.args.get("page", 1))
    skip = (page - 1) * size
    history = database()[COLLECTION]
    cursor = history.find(query, {"_id": 0, "resource": 0, "item_id": 0})
    cursor = cursor.sort([("at", pymongo.DESCENDING), ("_id", pymongo.DESCENDING)]).skip(skip).limit(size + 1)
    items = list(cursor)
    more = len(items) > size
    items = items[:size]
    total = history.count_documents(query) if more or (page > 1 and not items) else skip + len(items)
    path = request.path
    links = {"self": {"href": _page_url(path, page, size)}, "parent": {"href": path.rsplit("/", 1)[0]}}
    if more:
        links["next"] = {"href": _page_url(path, page + 1, size)}
    if page > 1:
        links["prev"] = {"href": _page_url(path, page - 1, size)}
    return jsonify({"_items": _jsonable(items), "_links": links,
                    "_meta": {"page": page, "max_results": size, "total": total}})


def _page_url(path, page, size):
    return f"{path}?{urlencode({'max_results': size, 'page': page})}"


def _history_path(kind, param):
    paging = [query("max_results", "entries per page (at most 1000)", {"type": "integer", "minimum": 1}),
              query("page", "the page (pages of 100 when max_results is not given)",
                    {"type": "integer", "minimum": 1})]
    return {"parameters": [{"name": param, "in": "path", "required": True, "schema": {"type": "string"}}],
            "get": op(f"history{kind}", f"History of one of the {kind.lower()}", "history", parameters=paging,
                      responses={"200": answer("History", "entries, newest first, a page at a time"),
                                 **error_responses(400, 404, 503)})}


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
        "History": {"type": "object", "properties": {
            "_items": {"type": "array", "items": {"$ref": "#/components/schemas/HistoryEntry"}},
            "_meta": {"type": "object", "properties": {"page": {"type": "integer"}, "max_results": {"type": "integer"},
                                                        "total": {"type": "integer"}}},
            "_links": {"type": "object", "description": "self, parent (the item), and next (prev) exactly when "
                                                        "there is a next (previous) page",
                       "additionalProperties": {"type": "object", "properties": {"href": {"type": "string"}}}}}},
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
            on(app, event, fn, resource)
    app.register_blueprint(bp)
