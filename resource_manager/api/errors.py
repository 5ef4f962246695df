"""One error body everywhere (Eve's shape), and request bodies checked before Eve sees them."""

import json
import logging
import socket
import threading
import time

import bson.errors
import pymongo.errors
from flask import current_app, g, jsonify, request
from werkzeug.exceptions import HTTPException

from ..core.jsontext import MAX_DEPTH, check_value, loads_strict  # noqa: F401  (re-exported for the routes
from .requestid import request_id

log = logging.getLogger(__name__)

WRITE_METHODS = ("POST", "PUT", "PATCH")
QUERY_ARGS = {"where", "sort", "projection"}


def error_response(code, message, issues=None, headers=None):
    """Return a JSON response in Eve's error shape, with this request's id in `_error.request_id`."""
    body = {"_status": "ERR", "_error": {"code": code, "message": message, "request_id": request_id()}}
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
    return error_response(error.code, error.description or error.name, headers=headers)


def note_database_error(kind):
    """Record that this request's answer translated a database error (unavailable, query_rejected)."""
    g.rm_database_error_kind = kind


def database_error_kind():
    """Return the kind of database error this request's answer translated, or None (see metrics.py)."""
    return g.get("rm_database_error_kind")


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
    if isinstance(error, pymongo.errors.ConnectionFailure):
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


class BodyTimeout(Exception):
    """The client did not send its whole body within BODY_TIMEOUT seconds."""


def add_body_gate(app, gate):
    """Run `gate()` before any request body is read; a response it returns is the answer.

    Gates refuse what needs no body to refuse (no credentials), so that an anonymous client
    sending its body slowly never holds a worker thread while it does.
    """
    app.extensions.setdefault("rm_body_gates", []).append(gate)


def read_body(seconds):
    """Return the request body, read within `seconds` in all. Raises BodyTimeout.

    The socket's timeout bounds a client that stops sending; a timer that shuts the socket's
    reading side at the deadline bounds one that trickles a byte at a time (each read would
    otherwise start a fresh timeout). Without the socket (another server), the body is read plainly.
    """
    sock = request.environ.get("gunicorn.socket") or request.environ.get("werkzeug.socket")
    if sock is None or not seconds:
        return request.get_data(cache=True)
    expired = threading.Event()

    def cut():
        expired.set()
        try:
            sock.shutdown(socket.SHUT_RD)
        except OSError:
            pass

    timer = threading.Timer(seconds, cut)
    timer.daemon = True
    prior = sock.gettimeout()
    deadline = time.monotonic() + seconds
    try:
        # A second later than the timer, so that the timer decides (a timeout inside the server's
        # reader may come back as a short body or as a 400 of Werkzeug's, not as a timeout).
        sock.settimeout(seconds + 1)
        timer.start()
        try:
            raw = request.get_data(cache=True)
        except Exception as e:  # what a cut-off read raises depends on the server (timeout, EOF, 400)
            if expired.is_set() or time.monotonic() >= deadline:
                raise BodyTimeout() from e
            raise
        if expired.is_set():  # cut off: what came is not the whole body
            raise BodyTimeout()
        return raw
    finally:
        timer.cancel()
        try:
            sock.settimeout(prior)
        except OSError:
            pass


def _stop_reading(always=False):
    # A refused request's body is never read: shut the reading side, so that the server does not
    # drain it (gunicorn would, for up to 5 s, holding the thread) and the connection closes after
    # the answer. The answer still goes out; the client sees it before the connection ends.
    if not (always or request.content_length or request.headers.get("Transfer-Encoding")):
        return
    sock = request.environ.get("gunicorn.socket") or request.environ.get("werkzeug.socket")
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RD)
        except OSError:
            pass


def check_body():
    """Refuse, before Eve parses it, a write body that is not a JSON object (or list of them)."""
    if request.method not in WRITE_METHODS:
        return None
    if request.routing_exception is not None:
        return None  # a 404 or 405 needs no body: Flask answers it next
    for gate in current_app.extensions.get("rm_body_gates", ()):
        try:
            refused = gate()
        except HTTPException as e:
            refused = e
        if refused is not None:
            _stop_reading()
            if isinstance(refused, HTTPException):
                raise refused
            return refused
    seconds = float(current_app.config.get("BODY_TIMEOUT", 10))
    try:
        # Not content_length: a chunked body has none, and must be checked all the same.
        raw = read_body(seconds)
    except BodyTimeout:
        _stop_reading(always=True)  # or gunicorn drains the rest, holding the thread 5 s more
        log.warning("%s %s: body not received within %g s; connection closed", request.method, request.path, seconds)
        return error_response(408, f"the request body did not arrive within {seconds:g} s")
    limit = request.max_content_length
    if request.content_length is None and limit and len(raw) >= limit:
        # Werkzeug stops reading a chunked body at the limit and hands over the truncated start.
        return error_response(413, f"body is larger than {limit} bytes")
    if not raw:
        # Eve's own writes need a document; a method the route lacks stays Eve's 405.
        kind = (request.endpoint or "").rpartition("|")[2]
        if (kind, request.method) in (("resource", "POST"), ("item_lookup", "PATCH"), ("item_lookup", "PUT")):
            return error_response(400, "body is empty: send a JSON object")
        return None
    if request.blueprint == "web":  # the dashboard posts HTML forms (CSRF-checked there)
        return None
    mimetype = request.mimetype
    if mimetype != "application/json" and not mimetype.endswith("+json"):
        return error_response(415, f"body must be application/json, not '{mimetype or 'none'}'")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return error_response(400, f"body is not valid UTF-8 (byte {e.start})")
    try:
        body = loads_strict(text)
    except ValueError as e:
        return error_response(400, f"body {e}")
    if isinstance(body, dict):
        return None
    if request.method == "POST" and isinstance(body, list) and body and all(isinstance(d, dict) for d in body):
        return None
    expected = "a JSON object" + (" or a non-empty list of objects" if request.method == "POST" else "")
    return error_response(400, f"body must be {expected}, not {_json_type(body)}")


def _json_type(value):
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")


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


def init_app(app):
    """Register the JSON error handlers and the body check."""
    app.before_request(check_body)
    app.after_request(complete_error_body)
    app.after_request(_database_failed_midway)
    app.register_error_handler(HTTPException, _http_error)
    for code in app.config.get("STANDARD_ERRORS", []):
        app.register_error_handler(code, _http_error)
    app.register_error_handler(pymongo.errors.ConnectionFailure, _database_unavailable)
    app.register_error_handler(pymongo.errors.ServerSelectionTimeoutError, _database_unavailable)
    app.register_error_handler(Exception, _unexpected)
