"""OpenAPI fragments of the routes this package serves itself (not Eve resources).

Each is published only when the app has the route (see openapi.document). Request bodies are
generated from their Cerberus schemas (core/constraints.BODIES, see BODY_SCHEMAS).
"""

import copy

from ..schema import RESERVATION_STATES
from .openapi import CREDENTIALS, JSON, body_schema, error_responses


def _json(ref_or_schema, description):
    schema = {"$ref": f"#/components/schemas/{ref_or_schema}"} if isinstance(ref_or_schema, str) else ref_or_schema
    return {"description": description, "content": {JSON: {"schema": schema}}}


# The operations a token of scope `reserve` reaches (api/tokens.py's RESERVE_ROUTES, by operationId).
RESERVE_OPERATIONS = frozenset({"reserve", "extend", "release", "releaseJob", "allocate"})


def _op(op_id, summary, tag, write=False, **rest):
    op = {"operationId": op_id, "summary": summary, "tags": [tag],
          "security": copy.deepcopy(CREDENTIALS) if write else []}
    if write:
        scopes = ["reserve", "write", "admin"] if op_id in RESERVE_OPERATIONS else ["write", "admin"]
        op["description"] = f"Needs role operator or admin; a token needs scope {', '.join(scopes)}."
        op["x-roles"] = ["operator", "admin"]
        op["x-token-scopes"] = scopes
    op.update(rest)
    return op


def _signed_in(op_id, summary, **rest):
    # Token routes: anybody signed in, for their own tokens (an admin: anyone's).
    return {"operationId": op_id, "summary": summary, "tags": ["tokens"], "security": copy.deepcopy(CREDENTIALS),
            "x-roles": ["reader", "operator", "admin"], **rest}


def _body(ref, required=True):
    return {"required": required, "content": {JSON: {"schema": {"$ref": f"#/components/schemas/{ref}"}}}}


# The component schema of each route body in core/constraints.BODIES, generated from it.
BODY_SCHEMAS = {"ReservationRequest": "reservation", "Extend": "extension", "PoolInput": "pool",
                "AllocateRequest": "allocation", "TokenRequest": "token"}


_IDEMPOTENCY = {"name": "Idempotency-Key", "in": "header", "required": False, "schema": {"type": "string"},
                "description": "repeat a request with the same key to get the first answer, not a second grant"}
_HISTORY = {"type": "object", "properties": {"_items": {"type": "array", "items": {
    "$ref": "#/components/schemas/HistoryEntry"}}}}
_WRITE_ERRORS = error_responses(400, 401, 403, 408, 415, 422, 503)

SCHEMAS = {
    "Health": {"type": "object", "properties": {
        "status": {"type": "string", "enum": ["ok", "degraded", "unavailable"]},
        "database": {"type": "string", "enum": ["up", "down"]}, "version": {"type": "string"},
        "users_file": {"type": "object", "description": "the accounts in use: status ok, stale (the file on disk "
                       "is unusable: error, since; the last good accounts serve) or none", "properties": {
                           "status": {"type": "string", "enum": ["ok", "stale", "none"]},
                           "accounts": {"type": "integer"}, "error": {"type": "string"},
                           "since": {"type": "string"}}},
        "engine": {"type": "string", "enum": ["mongodb", "ferretdb"]},
        "engine_version": {"type": "string", "nullable": True},
        "writes": {"type": "string", "description": "how conditional writes are made atomic on this engine"}}},
    "Reservation": {"type": "object", "properties": {
        "_id": {"type": "string"}, "owner": {"type": "string", "nullable": True},
        "job_id": {"type": "string", "nullable": True}, "count": {"type": "integer"},
        "hostnames": {"type": "array", "items": {"type": "string"}, "nullable": True},
        "state": {"type": "string", "enum": list(RESERVATION_STATES)},
        "expires": {"type": "string", "nullable": True},
        "where": {"type": "object", "additionalProperties": True, "nullable": True},
        "lease_seconds": {"type": "integer", "nullable": True}, "reason": {"type": "string", "nullable": True},
        "user": {"type": "string", "nullable": True}, "_created": {"type": "string"},
        "_updated": {"type": "string"},
        "position": {"type": "integer", "description": "place in line (1: next), only while queued"},
        "queued_at": {"type": "string", "description": "only on requests made with a wait"},
        "wait_until": {"type": "string"}, "wait_seconds": {"type": "integer"},
        "granted_at": {"type": "string", "nullable": True}, "ended": {"type": "string", "nullable": True},
        "_links": {"type": "object", "properties": {"self": {"type": "object", "properties": {
            "href": {"type": "string"}}}}}}},
    "ReservationList": {"type": "object", "properties": {"_items": {"type": "array", "items": {
        "$ref": "#/components/schemas/Reservation"}}}},
    "DryRun": {"type": "object", "properties": {
        "would_reserve": {"type": "array", "items": {"type": "string"}}, "matching": {"type": "integer"},
        "idle": {"type": "integer"}, "available": {"type": "integer"},
        "earmarked": {"type": "integer", "description": "unclaimed idle machines held for requests waiting in line"}}},
    "Released": {"type": "object", "properties": {
        "released": {"type": "array", "items": {"type": "string"}},
        "reservations": {"type": "array", "items": {"type": "string"}},
        "state": {"type": "string", "enum": ["cancelled", "timed_out"],
                  "description": "only when the reservation was queued (or was cancelled or timed out)"}}},
    "Sweep": {"type": "object", "properties": {
        "expired": {"type": "integer"}, "repaired": {"type": "integer"},
        "released": {"type": "array", "items": {"type": "string"}},
        "pxe_failed": {"type": "integer", "description": "machines in pxe over RM_PXE_TIMEOUT, now pxe_failed"},
        "queue": {"type": "object", "description": "only when its granting pass did something", "properties": {
            "granted": {"type": "array", "items": {"type": "string"}},
            "timed_out": {"type": "array", "items": {"type": "string"}}}}}},
    "Pool": {"type": "object", "properties": {
        "name": {"type": "string"}, "cidr": {"type": "string"}, "kind": {"type": "string"},
        "exclude": {"type": "array", "items": {"type": "string"}},
        "utilisation": {"type": "object", "properties": {
            "size": {"type": "integer"}, "allocated": {"type": "integer"}, "free": {"type": "integer"}}}}},
    "PoolList": {"type": "object", "properties": {"_items": {"type": "array", "items": {
        "$ref": "#/components/schemas/Pool"}}}},
    "Allocation": {"type": "object", "properties": {
        "_id": {"type": "string"}, "pool": {"type": "string"}, "owner": {"type": "string", "nullable": True},
        "addresses": {"type": "array", "items": {"type": "string"}}}},
    "HistoryEntry": {"type": "object", "properties": {
        "at": {"type": "string"}, "user": {"type": "string", "nullable": True},
        "action": {"type": "string", "enum": ["create", "update", "delete", "reserve", "release", "expire",
                                              "allocate", "queued", "granted", "cancelled", "timed_out"]},
        "changes": {"type": "object", "additionalProperties": {"type": "object", "properties": {
            "before": {}, "after": {}}}},
        "reason": {"type": "string", "nullable": True}, "job_id": {"type": "string", "nullable": True}}},
    "History": _HISTORY,
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

TAGS = [
    {"name": "health", "description": "for supervisors and load balancers"},
    {"name": "reservations", "description": "reserve machines race-free (or wait in the queue), release them, "
                                             "extend leases"},
    {"name": "address-pools", "description": "address pools and race-free address allocation"},
    {"name": "history", "description": "who changed what, newest first"},
    {"name": "tokens", "description": "API tokens: Authorization: Bearer, scoped, expiring, revocable, shown once"},
]


def _history_path(kind, param):
    return {"parameters": [{"name": param, "in": "path", "required": True, "schema": {"type": "string"}}],
            "get": _op(f"history{kind}", f"History of one of the {kind.lower()}", "history",
                       responses={"200": _json("History", "entries, newest first"), **error_responses(404, 503)})}


def own_routes(app):
    """Return (paths, schemas, tags) of our own routes, with the limits of this app's settings."""
    rid = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
    pool = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
    paths = {
        "/healthz": {"get": _op("health", "Is the service up (and its database)?", "health", responses={
            "200": _json("Health", "up"), "503": _json("Health", "the database does not answer")})},
        "/reservations": {
            "get": _op("listReservations", "List reservations", "reservations", parameters=[
                {"name": n, "in": "query", "schema": {"type": "string"}} for n in ("job_id", "owner", "state")],
                responses={"200": _json("ReservationList", "reservations"), **error_responses(400, 503)}),
            "post": _op("reserve", "Reserve idle machines", "reservations", write=True, parameters=[
                _IDEMPOTENCY, {"name": "dry_run", "in": "query", "schema": {"type": "string", "enum": ["1"]}}],
                requestBody=_body("ReservationRequest", required=False),
                responses={"201": _json("Reservation", "reserved"), "200": _json("DryRun", "dry run only"),
                           "202": {**_json("Reservation", "queued (with wait_seconds): state queued, position"),
                                   "headers": {"Location": {"schema": {"type": "string"},
                                                            "description": "/reservations/<id>"}}},
                           "409": {"$ref": "#/components/responses/Error409"}, **_WRITE_ERRORS}),
            "delete": _op("releaseJob", "Release every reservation of a job (and cancel its queued ones)",
                          "reservations", write=True,
                          parameters=[{"name": "job_id", "in": "query", "required": True,
                                       "schema": {"type": "string"}}],
                          responses={"200": _json("Released", "released"), **_WRITE_ERRORS}),
        },
        "/reservations/sweep": {"post": _op(
            "sweep", "Expire overdue leases now", "reservations", write=True,
            responses={"200": _json("Sweep", "swept"), **_WRITE_ERRORS})},
        "/reservations/{id}": {
            "parameters": [rid],
            "get": _op("getReservation", "Get one reservation (?wait=S: long-poll until its state changes)",
                       "reservations", parameters=[{
                           "name": "wait", "in": "query", "schema": {"type": "integer", "minimum": 0, "maximum": 60},
                           "description": "answer as soon as the state changes, or after this many seconds"}, {
                           "name": "state", "in": "query",
                           "schema": {"type": "string", "enum": list(RESERVATION_STATES)},
                           "description": "with wait: the state the client last saw; a different one answers at once"}],
                       responses={"200": _json("Reservation", "the reservation"), **error_responses(400, 404, 503)}),
            "delete": _op("release", "Release a reservation, or cancel a queued one (again: released [])",
                          "reservations", write=True,
                          responses={"200": _json("Released", "released"), **error_responses(401, 403, 404, 503)}),
        },
        "/reservations/{id}/history": {"parameters": [rid], "get": _op(
            "reservationHistory", "Queue events of a reservation (queued, granted, cancelled, timed_out)",
            "reservations", responses={"200": _json("History", "entries, oldest first"),
                                       **error_responses(404, 503)})},
        "/reservations/{id}/extend": {"parameters": [rid], "post": _op(
            "extend", "Extend a reservation's lease", "reservations", write=True, requestBody=_body("Extend"),
            responses={"200": _json("Reservation", "extended"), **error_responses(404, 409), **_WRITE_ERRORS})},
        "/address-pools": {
            "get": _op("listPools", "List address pools", "address-pools",
                       responses={"200": _json("PoolList", "pools"), **error_responses(503)}),
            "post": _op("createPool", "Create an address pool", "address-pools", write=True,
                        requestBody=_body("PoolInput"),
                        responses={"201": _json("Pool", "created"), "409": {"$ref": "#/components/responses/Error409"},
                                   **_WRITE_ERRORS}),
        },
        "/address-pools/{name}": {
            "parameters": [pool],
            "get": _op("getPool", "Get a pool and its utilisation", "address-pools",
                       responses={"200": _json("Pool", "the pool"), **error_responses(404, 503)}),
            "delete": {**_op("deletePool", "Delete a pool", "address-pools", write=True,
                             responses={"204": {"description": "deleted"},
                                        **error_responses(401, 403, 404, 409, 503)}),
                       "description": "Needs role admin.", "x-roles": ["admin"]},
        },
        "/address-pools/{name}/allocate": {"parameters": [pool], "post": _op(
            "allocate", "Allocate free addresses of a pool", "address-pools", write=True,
            parameters=[_IDEMPOTENCY], requestBody=_body("AllocateRequest", required=False),
            responses={"201": _json("Allocation", "allocated"), **error_responses(404, 409), **_WRITE_ERRORS})},
        "/tokens": {
            "get": _signed_in("listTokens", "List your tokens (an admin: everyone's, or ?user='s)", parameters=[
                {"name": "user", "in": "query", "schema": {"type": "string"}}],
                responses={"200": _json("TokenList", "tokens, never their secrets"), **error_responses(401, 403, 503)}),
            "post": _signed_in("createToken", "Create a token: its secret is shown in this answer only",
                               description="For yourself, or (admins) for anyone. A token creates tokens only with "
                                           "scope admin, and none that outlives it.",
                               requestBody=_body("TokenRequest"),
                               responses={"201": _json("TokenCreated", "created"), **_WRITE_ERRORS}),
        },
        "/tokens/{id}": {"parameters": [rid], "delete": _signed_in(
            "revokeToken", "Revoke a token: the next request with it is 401",
            description="Yours (a token may revoke itself), or anyone's for an admin; another user's is 404.",
            responses={"204": {"description": "revoked"}, **error_responses(401, 403, 404, 503)})},
        "/machines/{hostname}/history": _history_path("Machine", "hostname"),
        "/public-addresses/{address}/history": _history_path("PublicAddress", "address"),
        "/private-addresses/{address}/history": _history_path("PrivateAddress", "address"),
    }
    schemas = dict(SCHEMAS, **{ref: body_schema(name, app.config) for ref, name in BODY_SCHEMAS.items()})
    return paths, schemas, TAGS
