"""Bearer tokens on the API: who a token is, and what its scope lets it do (records: core/tokens.py).

A request carrying `Authorization: Bearer <token>` is that token's user, with the weaker of the
token's scope and the user's role as it is now: `read` acts as a reader, `reserve` and `write`
as an operator, `admin` as an admin. Scope `reserve` may write only where a route's declaration
(routemeta.py: x-token-scopes) says so: reserving, extending, releasing, allocating addresses.
A token that does not authenticate (malformed, unknown, revoked, expired, its user removed) is
refused with 401 on every API route, reads included; wrong secrets count against the
bad-password throttle (ratelimit.py) like wrong passwords. The dashboard ignores tokens.
"""

import logging

import pymongo.errors
from flask import abort, current_app, request

from ..core import tokens as records
from ..core.tokens import SCOPES
from . import ratelimit
from .db import collection_name, database
from .errors import error_response
from .eveglue import ITEM, eve_endpoint
from .lookup import name_filter
from .routemeta import current_route

log = logging.getLogger(__name__)

CHALLENGE = 'Bearer realm="resource_manager"'
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
ADDRESSES = ("public-addresses", "private-addresses")

def presented():
    """Return the text after `Bearer ` of the request's Authorization header, or None when it has none."""
    scheme, _, rest = (request.headers.get("Authorization") or "").strip().partition(" ")
    return rest.strip() if scheme.lower() == "bearer" else None


def _refuse(message):
    abort(error_response(401, message, headers={"WWW-Authenticate": f'{CHALLENGE}, error="invalid_token"'}))


def authenticate(text, users):
    """Return {"username", "role", "scope", "token", ...} of a valid token; abort 401 (or 429) otherwise.

    The record is looked up by _id (that reveals nothing) and the secret checked (a SHA-256 compared
    in constant time, microseconds) before the throttle is asked. Only wrong secrets count, keyed by
    the token's id and the client address (for a malformed or unknown token the address alone, so
    that spraying random tokens is throttled as one); past the allowance they get 429. A right secret
    is served even while its key waits: a neighbour guessing at a token's public id from the same
    address (a CI runner, a NAT, a proxy) locks out its own guesses, never the token. Refusing a right
    secret protected nothing: 256 random bits are not found by guessing at any rate.
    """
    db = database()
    record = records.lookup(db, text)
    if record is None or not records.matches(record, text):
        _wrong(users.limiter, record, text)
    # The secret is right: from here on, messages may say why.
    account = users.get(record["user"])
    if account is None or account.get("uid") != record.get("uid"):
        _forget(db, users, record, account)
        _refuse(f"token {record['_id']}: its user '{record['user']}' no longer exists")
    if records.expired(record):
        _refuse(f"token {record['_id']} expired at {record['expires'].strftime(current_app.config['DATE_FORMAT'])}")
    role = account.get("role", "reader")
    scope = records.effective_scope(record["scope"], role)
    try:
        records.touch(db, record)
    except pymongo.errors.PyMongoError as e:  # a lost last_used is no reason to refuse the request
        log.warning("token %s: last_used not recorded: %s", record["_id"], e)
    return {"username": record["user"], "role": records.SCOPE_ROLE[scope], "scope": scope, "token": record["_id"],
            "token_scope": record["scope"], "user_role": role, "expires": record.get("expires")}


def _wrong(limiter, record, text):
    # Counted under the throttle (at most its allowance of a burst is answered 401, the rest 429), then 401.
    if limiter:
        key = (f"token:{record['_id']}" if record else "token:?", request.remote_addr or "")
        wait = limiter.begin(key)
        if wait:
            ratelimit.refuse(wait, "token attempts")
        limiter.end(key, False)
    _refuse("the token is malformed" if records.parse(text) is None else "the token is unknown or revoked")


def _forget(db, users, record, account):
    # A removed (or removed and re-created) user's tokens are dead: delete them, but only while the
    # users file reads well (a missing or broken file must not wipe everyone's tokens).
    if users.status().get("status") != "ok":
        return
    if account is None:
        count = records.revoke_user(db, record["user"])
    else:
        count = int(records.revoke(db, record["_id"]))
    log.warning("deleted %d token(s) of user '%s', who no longer exists", count, record["user"][:64])


def refusal(user):
    """Return the 403 answer when a token's scope may not do this request, else None.

    The scope an operation needs is its declaration's (routemeta.py, x-token-scopes): a write
    nobody declared needs scope write, so a route added later is closed to `reserve` tokens
    until its declaration opens it.
    """
    if not user or not user.get("token") or request.method in SAFE_METHODS or request.routing_exception:
        return None
    scope = user["scope"]
    if scope in ("write", "admin"):
        return None  # operator or admin: the routes' role checks decide
    route = current_route()
    needs = route.scope if route is not None else "write"
    if SCOPES.index(scope) >= SCOPES.index(needs):
        eve = eve_endpoint(request.endpoint)
        return _unallocated_address() if eve and eve.kind == ITEM and eve.resource in ADDRESSES else None
    return error_response(403, f"{describe(user)} may not {request.method} {request.path}; needs scope {needs}")


def describe(user):
    """Say what a token may do: "token X has scope 'read'" (and why, when the user's role cut it down)."""
    text = f"token {user['token']} has scope '{user['token_scope']}'"
    if user["scope"] != user["token_scope"]:
        text += f", limited to '{user['scope']}' by the role '{user['user_role']}' of user '{user['username']}'"
    return text


def _unallocated_address():
    # Releasing is deleting an allocated address: a reserve token may not delete one nobody holds.
    resource = eve_endpoint(request.endpoint).resource
    value = (request.view_args or {}).get("_id", "")
    doc = database()[collection_name(current_app, resource)].find_one(name_filter(resource, value), {"owner": 1})
    if doc is not None and not doc.get("owner"):
        return error_response(403, f"a token of scope 'reserve' releases allocated addresses only; {value} has "
                                   "no owner")
    return None
