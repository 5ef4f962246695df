"""One error body everywhere (Eve's shape): the app's error handlers (request bodies: intake.py)."""

import json
import logging
import re

import bson.errors
import pymongo.errors
from flask import abort, current_app, g, jsonify, request
from werkzeug.exceptions import HTTPException, NotFound

from ..core.errors import AllocationError
from ..core.jsontext import MAX_DEPTH, check_value, loads_strict  # noqa: F401  (re-exported for the routes
from .eveglue import eve_endpoint
from .requestid import request_id

log = logging.getLogger(__name__)

QUERY_ARGS = {"where", "sort", "projection"}
# What FerretDB (code 1, InternalError) passes on from its PostgreSQL driver when the database is away
# for a moment: a backend was killed and PostgreSQL restarts them all (in recovery, not yet accepting
# connections), a shutdown or a restart (57P01-57P03, class 08: connection errors), a connection broken
# under a query, or PostgreSQL not listening at all (dial error). Anything else of code 1 is a bug: a 500.
_UNAVAILABLE = re.compile(r"\(SQLSTATE (?:57P0[123]|08[0-9A-Z]{3})\)|: dial error: "
                          r"|(?:read|write): (?:broken pipe|connection reset by peer)\Z"
                          r"|(?:\]|:) (?:unexpected EOF|conn closed)\Z")


def error_response(code, message, issues=None, headers=None, details=None):
    """Return a JSON response in Eve's error shape, with this request's id in `_error.request_id`.

    `details`: more fields of `_error` (e.g. the reservation an Idempotency-Key made).
    """
    body = {"_status": "ERR", "_error": {"code": code, "message": message, **(details or {}),
                                         "request_id": request_id()}}
    if issues:
        body["_issues"] = issues
    response = jsonify(body)
    response.status_code = code
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def _http_error(error):
    if error.code == 500:
        # Eve answers abort(500) from inside `except PyMongoError`: the database error is the news.
        known = _known(error.__cause__ or error.__context__)
        if known is not None:
            return known
    if error.code == 400 and isinstance(error.__context__, pymongo.errors.ConnectionFailure):
        # Eve's PATCH and PUT answer abort(400) to any exception of the write itself: the database (or
        # the write lock's) gone between the read and the write is a 503, not the client's fault.
        return _database_unavailable(error.__context__)
    headers = {}
    if error.code == 401:
        headers["WWW-Authenticate"] = 'Basic realm="resource_manager", Bearer realm="resource_manager"'
    if error.code == 405 and error.valid_methods:
        headers["Allow"] = ", ".join(error.valid_methods)
    if error.response is not None and error.code in (401, 429, 503):
        for name in ("WWW-Authenticate", "Retry-After"):
            if name in error.response.headers:
                headers[name] = error.response.headers[name]
    description = error.description
    if error.code == 404 and description == NotFound.description:
        description = _not_found()  # Eve's abort(404), Flask's unknown URL: say what was not found
    return error_response(error.code, description or error.name, headers=headers)


def _not_found():
    found = eve_endpoint(request.endpoint)
    value = (request.view_args or {}).get("_id")
    if found is not None and found.kind == "item_lookup" and value is not None:
        title = current_app.config["DOMAIN"][found.resource].get("item_title") or found.resource
        return f"no {title.lower()} '{str(value)[:200]}'"
    return f"no such route: {request.path[:200]}"


def _refused(error):
    # core/errors.AllocationError: what the allocator cannot do now, with its status (409, 422, 429, 503...).
    return error_response(error.status, error.message, headers=error.headers(), details=error.details)


def note_database_error(kind):
    """Record that this request's answer translated a database error (unavailable, query_rejected)."""
    g.rm_database_error_kind = kind


def database_error_kind():
    """Return the kind of database error this request's answer translated, or None (see metrics.py)."""
    return g.get("rm_database_error_kind")


def database_unavailable(error):
    """Return whether `error` says that the database is away for now (answered 503, retry), not a bug."""
    if isinstance(error, pymongo.errors.ConnectionFailure):
        return True
    if isinstance(error, pymongo.errors.OperationFailure) and error.code == 1:
        return _UNAVAILABLE.search((error.details or {}).get("errmsg") or str(error)) is not None
    return False


def _database_unavailable(error):
    log.warning("database unavailable: %s", error)
    note_database_error("unavailable")
    return error_response(503, "database unavailable, try again shortly", headers={"Retry-After": "5"})


def _unstorable(error):
    """Return the message of a BSON encoding error that client data caused, else None.

    Only errors the encoder raises on values it cannot represent: a key with NUL or '$',
    an integer beyond 64 bits, a string that is not UTF-8. Anything else stays a 500.
    """
    if isinstance(error, (bson.errors.InvalidDocument, bson.errors.InvalidStringData)):
        return str(error)
    if isinstance(error, OverflowError) and "8-byte ints" in str(error):
        return "an integer does not fit in 64 bits"
    return None


def _known(error):
    """Return the answer to an error we know (the database's, the BSON encoder's), else None.

    Only `error` itself is judged, never what it was raised while handling: a bug of ours
    inside `except OperationFailure` is a bug, answered 500 with its traceback in the log.
    """
    unstorable = _unstorable(error)
    if unstorable is not None:
        # Every input path checks values before they reach the encoder; one that did not is
        # still the client's value, but a check is missing: say so in the log.
        log.warning("value refused by the BSON encoder on %s %s (a missing input check): %s",
                    request.method, request.path, unstorable)
        return error_response(400, f"the request holds a value the database cannot store: {unstorable[:200]}")
    if database_unavailable(error):
        return _database_unavailable(error)
    if isinstance(error, pymongo.errors.OperationFailure) and QUERY_ARGS & set(request.args):
        message = (error.details or {}).get("errmsg") or str(error)
        note_database_error("query_rejected")
        return error_response(400, f"the database rejected the query: {message}")
    return None


def _unexpected(error):
    if isinstance(error, HTTPException):
        return _http_error(error)
    known = _known(error)
    if known is not None:
        return known
    log.exception("unhandled error on %s %s", request.method, request.path)
    return error_response(500, "internal server error")


def complete_error_body(response):
    """Give an error body Eve wrote itself (its 422s) the `_error` and `_error.request_id` every other has."""
    if response.status_code < 400 or response.mimetype != "application/json" or response.is_streamed:
        return response
    try:
        body = json.loads(response.get_data())
    except ValueError:
        return response
    if not (isinstance(body, dict) and body.get("_status") == "ERR"):
        return response
    if not isinstance(body.get("_error"), dict):
        message = "the document is not valid: see _issues" if body.get("_issues") else "request failed"
        body["_error"] = {"code": response.status_code, "message": message}
    elif "request_id" in body["_error"]:
        return response
    body["_error"]["request_id"] = request_id()
    response.set_data(json.dumps(body))
    return response


def _database_failed_midway(response):
    # Set where a database failure was swallowed and reported as something else (validation.py).
    error = g.pop("rm_database_error", None)
    return _database_unavailable(error) if error is not None else response


def check_nul():
    """Refuse a request whose path, query or headers hold a NUL character: 404 in the path, else 400.

    Nothing stored holds one (PostgreSQL's jsonb, behind the embedded database, cannot), and one that
    reached a query was a 500 there. Checked here, before any view, for every route, present and future.
    """
    if "\0" in request.path:
        abort(404, description="no such item or route: the URL holds a NUL character")
    for kind, pairs in (("query parameter", request.args.items(multi=True)), ("header", request.headers.items())):
        for name, value in pairs:
            if "\0" in name or "\0" in value:
                abort(400, description=f"{kind} {name[:64]!r} holds a NUL character, which nothing stored can hold")
    return None


def init_app(app):
    """Register the JSON error handlers and the NUL check."""
    app.before_request(check_nul)
    app.after_request(complete_error_body)
    app.after_request(_database_failed_midway)
    app.register_error_handler(HTTPException, _http_error)
    for code in app.config.get("STANDARD_ERRORS", []):
        app.register_error_handler(code, _http_error)
    app.register_error_handler(AllocationError, _refused)
    app.register_error_handler(pymongo.errors.ConnectionFailure, _database_unavailable)
    app.register_error_handler(pymongo.errors.ServerSelectionTimeoutError, _database_unavailable)
    app.register_error_handler(Exception, _unexpected)
