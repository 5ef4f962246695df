"""Responses and request headers shared by our own JSON routes (reservations, pools)."""

from flask import abort, jsonify, request

from .errors import error_response

MAX_KEY_LENGTH = 256


def created(body, location=None):
    """Return a 201 JSON response, with a Location header when the item has its own URL."""
    response = jsonify(body)
    response.status_code = 201
    if location:
        response.headers["Location"] = location
    return response


def invalid(what, issues):
    """Return the 422 for a request body whose fields have `issues` ({field: message})."""
    summary = "; ".join(f"{field}: {message}" for field, message in issues.items())
    return error_response(422, f"invalid {what}: {summary}", issues=issues)


def idempotency_key():
    """Return the request's Idempotency-Key, or None; abort 400 when it is too long."""
    key = request.headers.get("Idempotency-Key") or None
    if key is not None and len(key) > MAX_KEY_LENGTH:
        abort(400, description=f"Idempotency-Key is longer than {MAX_KEY_LENGTH} characters")
    return key
