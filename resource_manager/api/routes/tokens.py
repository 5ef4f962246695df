"""/tokens: create, list and revoke API tokens (how they authenticate: api/tokens.py, core/tokens.py).

Who may do what:
- Anyone signed in creates tokens for themselves, of a scope up to their role (reader: read,
  operator: write, admin: admin); an admin also for anyone (`user`).
- A token may create tokens only if its scope is admin, and never one that outlives it. A token
  of a lower scope cannot mint tokens: a leaked `reserve` token stays a `reserve` token until it
  expires or is revoked.
- Everyone lists and revokes their own tokens; an admin lists (`?user=`) and revokes anyone's.
  Another user's token is "no such token" (404) to a non-admin, and `?user=` of someone else 403.
  A token may always revoke itself; revoking other tokens with a token needs scope admin.
"""

import datetime
import logging

from flask import Blueprint, current_app, jsonify, request

from ...core import tokens as records
from ...core.clock import utcnow
from ...schema import ROLES
from ..auth import require_role
from ..bodies import validate
from ..db import database
from ..errors import error_response
from ..openapi import WRITE_ERRORS, answer, body_ref, error_responses, query, register, signed_in
from ..responses import created, invalid

log = logging.getLogger(__name__)

bp = Blueprint("tokens", __name__)

DEFAULT_DAYS = 90
DEFAULT_MAX_DAYS = 366


def check_dates(req, now, max_days):
    """Return ({scope, expires, description, user}, issues) of a POST /tokens body valid by its schema.

    The schema (core/constraints.BODIES["token"]) checks each field; this, the expiry it asks for.
    """
    issues = {}
    latest = now + datetime.timedelta(days=max_days)
    expires = now + datetime.timedelta(days=min(DEFAULT_DAYS, max_days))
    if req["expires_in"] is not None and req["expires"] is not None:
        issues["expires"] = "give expires_in or expires, not both"
    elif req["expires_in"] is not None:
        if req["expires_in"] > max_days * 86400:
            issues["expires_in"] = f"a whole number of seconds, 1 to {max_days * 86400} ({max_days} days)"
        else:
            expires = now + datetime.timedelta(seconds=req["expires_in"])
    elif req["expires"] is not None:
        expires = _date(req["expires"])
        if expires is None or not now < expires <= latest:
            issues["expires"] = f"a date (ISO 8601, e.g. 2027-01-31T00:00:00Z) in the next {max_days} days"
    return {"scope": req["scope"], "expires": expires, "description": req["description"], "user": req["user"]}, issues


def _date(value):
    if not isinstance(value, str) or len(value) > 40:
        return None
    try:
        date = datetime.datetime.fromisoformat(value)
        date = date if date.tzinfo else date.replace(tzinfo=datetime.timezone.utc)
        return date.astimezone(datetime.timezone.utc).replace(microsecond=0)
    except (ValueError, OverflowError):  # not a date; or one whose offset leaves the years 1-9999
        return None


def render(record):
    """Return the JSON body of a token's record: never its hash, and its secret only at creation."""
    fmt = current_app.config["DATE_FORMAT"]
    body = {}
    for field in records.PUBLIC_FIELDS:
        value = record.get(field)
        body[field] = value.strftime(fmt) if isinstance(value, datetime.datetime) else value
    body["expired"] = records.expired(record)
    return body


def _no_such_token(token_id):
    return error_response(404, f"no token {str(token_id)[:64]}")


@bp.post("/tokens")
def create():
    """Create a token; its secret is in this answer and nowhere else."""
    caller = require_role(*ROLES)
    body = request.get_json(silent=True) if request.content_length else {}
    if not isinstance(body, dict):
        return error_response(400, "body must be a JSON object")
    if caller["token"] and caller["scope"] != "admin":
        return error_response(403, f"token {caller['token']} has scope '{caller['scope']}': only a token of scope "
                                   "admin creates tokens (or sign in with your password)")
    now = utcnow()
    max_days = max(1, int(current_app.config.get("TOKEN_MAX_DAYS", DEFAULT_MAX_DAYS)))
    req, issues = validate("token", body)
    if not issues:
        req, issues = check_dates(req, now, max_days)
    if issues:
        return invalid("token", issues)
    target = req["user"] or caller["username"]
    if target != caller["username"] and caller["role"] != "admin":
        return error_response(403, f"user '{caller['username']}' may create tokens for themselves only; "
                                   "an admin creates them for others")
    account = current_app.extensions["rm_users"].get(target)
    if account is None:
        return invalid("token", {"user": f"no user '{target[:64]}'"})
    # Never beyond the user's role, nor beyond what the caller may do itself (a token: its scope).
    ceiling = records.weaker(records.ROLE_SCOPE.get(account.get("role"), "read"), caller["scope"])
    if records.weaker(req["scope"], ceiling) != req["scope"]:
        return invalid("token", {"scope": f"at most '{ceiling}' for user '{target[:64]}' "
                                          f"(role '{account.get('role', 'reader')}')"})
    if caller["token"] and caller.get("expires") is not None and req["expires"] > caller["expires"]:
        return invalid("token", {"expires": f"not later than the token creating it "
                                            f"({caller['expires'].strftime(current_app.config['DATE_FORMAT'])})"})
    by = caller["username"] + (f" (token {caller['token']})" if caller["token"] else "")
    record, token = records.create(database(), target, account.get("uid"), req["scope"], req["expires"],
                                   req["description"], by)
    log.info("token %s (scope %s) created for user '%s' by %s", record["_id"], req["scope"], target, by)
    response = created({**render(record), "token": token})
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/tokens")
def listing():
    """List your tokens (an admin: everyone's, or ?user='s). Never a secret or a hash."""
    caller = require_role(*ROLES)
    user = request.args.get("user") or None
    if caller["role"] != "admin":
        if user not in (None, caller["username"]):
            return error_response(403, f"user '{caller['username']}' may list their own tokens only")
        user = caller["username"]
    return jsonify({"_items": [render(r) for r in records.listing(database(), user)]})


@bp.delete("/tokens/<token_id>")
def revoke(token_id):
    """Revoke a token: the next request with it is refused (401)."""
    caller = require_role(*ROLES)
    db = database()
    record = records.get(db, token_id)
    if record is None or (record["user"] != caller["username"] and caller["role"] != "admin"):
        return _no_such_token(token_id)  # another user's token is none of a non-admin's business
    if caller["token"] and caller["token"] != token_id and caller["scope"] != "admin":
        return error_response(403, f"token {caller['token']} has scope '{caller['scope']}': a token revokes "
                                   "itself, or others with scope admin (or sign in with your password)")
    if not records.revoke(db, token_id):
        return _no_such_token(token_id)
    log.info("token %s of user '%s' revoked by %s", token_id, record["user"], caller["username"])
    return "", 204


def _openapi():
    """The OpenAPI of the token routes."""
    rid = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
    paths = {
        "/tokens": {
            "get": signed_in("listTokens", "List your tokens (an admin: everyone's, or ?user='s)", parameters=[
                query("user", "this user's tokens (admins; anyone else: their own name only)")],
                responses={"200": answer("TokenList", "tokens, never their secrets"),
                           **error_responses(401, 403, 503)}),
            "post": signed_in("createToken", "Create a token: its secret is shown in this answer only",
                              description="For yourself, or (admins) for anyone. A token creates tokens only with "
                                           "scope admin, and none that outlives it.",
                              requestBody=body_ref("TokenRequest"),
                              responses={"201": answer("TokenCreated", "created"), **WRITE_ERRORS}),
        },
        "/tokens/{id}": {"parameters": [rid], "delete": signed_in(
            "revokeToken", "Revoke a token: the next request with it is 401",
            description="Yours (a token may revoke itself), or anyone's for an admin; another user's is 404.",
            responses={"204": {"description": "revoked"}, **error_responses(401, 403, 404, 503)})},
    }
    schemas = {
        "Token": {"type": "object", "properties": {
            "_id": {"type": "string", "pattern": "^[0-9a-f]{16}$"}, "user": {"type": "string"},
            "scope": {"type": "string", "enum": ["read", "reserve", "write", "admin"]},
            "description": {"type": "string", "nullable": True}, "created": {"type": "string"},
            "created_by": {"type": "string"}, "expires": {"type": "string"},
            "last_used": {"type": "string", "nullable": True, "description": "to the minute"},
            "expired": {"type": "boolean"}}},
        "TokenCreated": {"allOf": [{"$ref": "#/components/schemas/Token"}, {"type": "object", "properties": {
            "token": {"type": "string", "description": "the secret, rm_<id>_<secret>: in this answer only"}}}]},
        "TokenList": {"type": "object", "properties": {"_items": {"type": "array", "items": {
            "$ref": "#/components/schemas/Token"}}}},
    }
    return paths, schemas, [{"name": "tokens", "description": "API tokens: Authorization: Bearer, scoped, expiring, "
                                                               "revocable, shown once"}]


def init_app(app):
    """Register the token routes and the index that lists a user's tokens."""
    register(app, *_openapi())
    app.extensions["rm_indexes"].add(records.COLLECTION, [("user", 1)], name="user_1")
    app.register_blueprint(bp)
