"""Request bodies at the socket level: gates before any body is read, a deadline for reading it, its shape.

Before Eve (or a route of ours) sees a write's body, `check_body` runs the gates (credentials:
auth.py; the dashboard's sign-in: web/), reads the body within BODY_TIMEOUT seconds (408
after, the connection closed), and refuses a body that is not a JSON object, or a non-empty
list of objects for POST (400, 413, 415). A refused request's body is never read.
"""

import logging
import socket
import threading
import time

from flask import current_app, request
from werkzeug.exceptions import HTTPException

from ..core.jsontext import loads_strict
from .errors import error_response
from .eveglue import COLLECTION, ITEM, eve_endpoint

log = logging.getLogger(__name__)

WRITE_METHODS = ("POST", "PUT", "PATCH")


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
        eve = eve_endpoint(request.endpoint)
        if eve and (eve.kind, request.method) in ((COLLECTION, "POST"), (ITEM, "PATCH"), (ITEM, "PUT")):
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


def init_app(app):
    """Check every write's body before anything else reads it."""
    app.before_request(check_body)
