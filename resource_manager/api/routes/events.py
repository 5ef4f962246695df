"""GET /events: every change as server-sent events, resumable with Last-Event-ID (ids: core/events.py).

Each message is `id: N`, `event: <type>`, `data: <JSON>`; a stream ends by itself after
EVENTS_STREAM_SECONDS (clients reconnect, and EventSource sends Last-Event-ID), sends a comment
every HEARTBEAT seconds while quiet, and holds one of the process's long-request slots
(slots.py: 503 with Retry-After when all are held). EVENTS_AUTH: "open" (default), or the least
role that may listen.
"""

import logging
import re
import select
import socket
import time

from flask import Blueprint, Response, current_app, request
from pymongo.errors import InvalidOperation, PyMongoError

from ...schema import ROLES
from .. import eventfeed, slots
from ..auth import require_role
from ..errors import error_response
from ..openapi import error_responses, register

log = logging.getLogger(__name__)

bp = Blueprint("events", __name__)

DEFAULT_STREAM_SECONDS = 60
HEARTBEAT = 10.0  # s between comments while quiet (proxies and clients see the stream alive)
HANG_UP_CHECK = 1.0  # s between looks at whether the client is still there
RETRY_MS = 1000  # how soon EventSource reconnects after a stream ended
LOST = "events.lost"
TYPE_PATTERN = re.compile(r"^(\*|[a-z_]+\.\*|[a-z_]+\.[a-z_]+)$")


def message(event_id, kind, data):
    """Return one server-sent event (its data: JSON text without newlines)."""
    return f"id: {event_id}\nevent: {kind}\ndata: {data}\n\n"


def matcher(patterns):
    """Return a predicate on event types for patterns such as machine.updated, reservation.* or *."""
    if not patterns or "*" in patterns:
        return lambda kind: True
    exact = {p for p in patterns if not p.endswith(".*")}
    prefixes = tuple(p[:-1] for p in patterns if p.endswith(".*"))
    return lambda kind: kind in exact or kind.startswith(prefixes)


def _types():
    # Return (patterns, problem) of ?types=.
    text = request.args.get("types")
    if text is None:
        return [], None
    patterns = [p.strip() for p in text.split(",") if p.strip()]
    bad = [p for p in patterns if not TYPE_PATTERN.match(p)]
    if bad or not patterns:
        return None, (f"types must be event types or patterns, comma-separated (machine.updated, reservation.*, "
                      f"*), not {(bad or [text])[0][:64]!r}")
    return patterns, None


def _position():
    # Return (Last-Event-ID or ?last_event_id= as an int, or None; problem).
    text = request.headers.get("Last-Event-ID")
    if text is None:
        text = request.args.get("last_event_id")
    if text is None or not text.strip():
        return None, None
    if not text.strip().isdigit() or len(text.strip()) > 18:
        return None, f"Last-Event-ID must be an event id (a whole number), not {text[:32]!r}"
    return int(text.strip()), None


def hung_up(sock):
    """Return whether the client closed its end (a stream's client sends nothing after its request)."""
    if sock is None:
        return False
    try:
        readable, _w, _x = select.select([sock], [], [], 0)
        return bool(readable) and sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except (OSError, ValueError):
        return True


def _stream(feed, position, accept, seconds, sock):
    # Yield the stream's text: a retry hint, then events after `position` until `seconds` have passed.
    yield f"retry: {RETRY_MS}\n\n"
    deadline = time.monotonic() + seconds
    quiet_since = time.monotonic()
    resuming = True
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or hung_up(sock):  # a client gone gives its slot back within a second
            return
        try:
            if resuming:
                resuming = False
                feed.check_resume(position)
            batch = feed.after(position, min(HANG_UP_CHECK, left))
        except eventfeed.Lost as lost:
            position = feed.start_position()
            yield message(position, LOST, f'{{"last_event_id":{lost.position},"oldest_kept":{lost.oldest},'
                                          f'"resumes_after":{position}}}')
            quiet_since = time.monotonic()
            continue
        except InvalidOperation:
            return  # the app's database client was closed: the app is going away
        except PyMongoError as e:
            log.warning("event stream: database unavailable: %s", e)
            yield ": database unavailable; reconnect\n\n"
            return
        text = "".join(message(e.id, e.type, e.data) for e in batch if accept(e.type))
        if batch and not accept(batch[-1].type):
            text += f"id: {batch[-1].id}\n\n"  # not wanted: no event, but the client's resume point moves on
        if batch:
            position = batch[-1].id
        if text:
            quiet_since = time.monotonic()
            yield text
        elif time.monotonic() - quiet_since >= HEARTBEAT:
            quiet_since = time.monotonic()
            yield ": keep-alive\n\n"


@bp.get("/events")
def stream():
    """Stream every change (server-sent events) from after Last-Event-ID, or from now."""
    needed = current_app.config.get("EVENTS_AUTH") or "open"
    if needed != "open":
        require_role(*ROLES[ROLES.index(needed):])
    patterns, problem = _types()
    if problem:
        return error_response(400, problem)
    position, problem = _position()
    if problem:
        return error_response(400, problem)
    app = current_app._get_current_object()
    feed = eventfeed.feed(app)
    slot = slots.take("events")
    try:
        start = feed.start_position()
        position = start if position is None else position
        feed.attach()
    except BaseException:
        slot.release()
        raise
    seconds = float(app.config.get("EVENTS_STREAM_SECONDS", DEFAULT_STREAM_SECONDS))
    sock = request.environ.get("gunicorn.socket") or request.environ.get("werkzeug.socket")
    response = Response(_stream(feed, position, matcher(patterns), seconds, sock), mimetype="text/event-stream",
                        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    response.call_on_close(feed.detach)
    response.call_on_close(slot.release)
    return response


def _openapi():
    """The OpenAPI of GET /events."""
    paths = {"/events": {"get": {
        "operationId": "events", "summary": "Every change, as server-sent events (text/event-stream)",
        "tags": ["events"], "security": [{}, {"basicAuth": []}, {"bearerAuth": []}],
        "description": "Each event: `id:` (increasing; send it back as Last-Event-ID to resume), `event:` its type "
                       "(machine.created|updated|deleted, reservation.queued|granted|extended|released|expired|"
                       "cancelled|timed_out, address.allocated|released|created|updated|deleted; events.lost when "
                       "the events after Last-Event-ID are no longer kept) and `data:` a JSON object. The stream "
                       "ends after EVENTS_STREAM_SECONDS (60); reconnect with Last-Event-ID. Open unless "
                       "EVENTS_AUTH names the least role that may listen. 503 when this server process already "
                       "holds LONG_REQUEST_SLOTS long requests.",
        "parameters": [
            {"name": "Last-Event-ID", "in": "header", "schema": {"type": "string", "pattern": "^[0-9]+$"},
             "description": "resume after this event id (EventSource sends it when it reconnects)"},
            {"name": "last_event_id", "in": "query", "schema": {"type": "integer", "minimum": 0},
             "description": "the same, for clients that cannot set headers (the header wins)"},
            {"name": "types", "in": "query", "schema": {"type": "string"}, "example": "machine.*,reservation.granted",
             "description": "only these event types, comma-separated; `kind.*` for every type of a kind"}],
        "responses": {"200": {"description": "the stream: one event after another", "content": {
            "text/event-stream": {"schema": {"$ref": "#/components/schemas/ServerSentEvent"}}}},
            **error_responses(400, 401, 403, 503)}}}}
    schemas = {"ServerSentEvent": {
        "type": "object", "description": "one event of the stream, as an EventSource client sees it",
        "properties": {"id": {"type": "string", "pattern": "^[0-9]+$", "description": "the event id"},
                       "event": {"type": "string", "description": "its type, e.g. machine.updated"},
                       "data": {"type": "string", "description": "a JSON object: the item, changes, who, when"},
                       "retry": {"type": "integer", "description": "ms before reconnecting, once per stream"}}}}
    return paths, schemas, [{"name": "events", "description": "every change as it happens: server-sent events, and "
                                                         "webhooks"}]


def init_app(app):
    """Serve GET /events with this process's event feed; index the events by page."""
    register(app, *_openapi())
    eventfeed.init_app(app)
    app.extensions["rm_indexes"].add("events", [("page", 1)], name="page_1")
    app.register_blueprint(bp)
