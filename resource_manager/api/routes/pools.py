"""/address-pools: define pools, see their utilisation, allocate addresses from them."""

from bson import ObjectId
from flask import Blueprint, current_app, jsonify, request
from pymongo.errors import DuplicateKeyError

from ...core import addresses as address_allocation
from ...core import counts, mutex, pool_hints
from ...core.clock import utcnow
from ...core.ipranges import MAX_EXCLUDE, normalise, parse_pool
from ...core.store import ADDRESS_CLAIMS, POOLS
from ..auth import require_role
from ..bodies import validate
from ..db import core, database
from ..errors import error_response
from ..openapi import IDEMPOTENCY, WRITE_ERRORS, answer, body_ref, error_responses, op, query, register
from ..responses import created, idempotency_key, invalid

bp = Blueprint("pools", __name__)

DEFAULT_MAX_POOLS = 1000


def render(pool, with_utilisation=True):
    """Return the JSON body of a pool."""
    fmt = current_app.config["DATE_FORMAT"]
    body = {"_id": str(pool["_id"]), "name": pool["name"], "cidr": pool["cidr"], "kind": pool["kind"],
            "exclude": pool.get("exclude", []), "_created": pool["_created"].strftime(fmt),
            "_updated": pool["_updated"].strftime(fmt)}
    if with_utilisation:
        body["utilisation"] = address_allocation.utilisation(database(), pool)
    return body


def _find(name):
    return database()[POOLS].find_one({"name": name})


def _check_pool(body):
    body, issues = validate("pool", body)
    if "cidr" in issues or "exclude" in issues:
        return None, issues
    max_entries = int(current_app.config.get("POOL_MAX_EXCLUDE", MAX_EXCLUDE))
    network, _excluded, more = parse_pool(body["cidr"], body["exclude"], max_entries)
    return network, {**more, **issues}


def _stored_form(network, body):
    """Return the pool's cidr, merged `exclude` and precomputed `ranges` (see ipranges.normalise)."""
    fields, _issues = normalise(network, body.get("exclude", []), max_entries=None)  # checked by _check_pool
    return fields


def _too_many(db):
    limit = int(current_app.config.get("POOLS_MAX", DEFAULT_MAX_POOLS))
    # Bounds the cost of every listing (and of the overlap check); concurrent creations may pass it by a few.
    if db[POOLS].count_documents({}) >= limit:
        return error_response(409, f"there are {limit} pools already, the most this server keeps (POOLS_MAX)")
    return None


def _overlapping(db, kind, network):
    for pool in db[POOLS].find({"kind": kind}, {"name": 1, "cidr": 1}):
        other = address_allocation.pool_ranges(pool)[0]
        if other.version == network.version and other.overlaps(network):
            return pool["name"]
    return None


@bp.post("/address-pools")
def create():
    """Define a pool."""
    require_role("operator", "admin")
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        return error_response(400, "body must be a JSON object")
    network, issues = _check_pool(body)
    if issues:
        return invalid("pool", issues)
    here = core()
    db = here.db
    now = utcnow()
    pool = {"_id": ObjectId(), "name": body["name"], "kind": body["kind"], **_stored_form(network, body),
            "_created": now, "_updated": now}
    try:
        # One pool definition of a kind at a time, so that the overlap check still holds at the insert.
        with mutex.holding(here, f"pools/{body['kind']}"):
            refused = _too_many(db)
            if refused is not None:
                return refused
            other = _overlapping(db, body["kind"], network)
            if other:
                return error_response(409, f"{network} overlaps pool {other}")
            counts.add_pool(db, pool)  # and counts its claimed addresses
    except DuplicateKeyError:
        return error_response(409, f"pool {body['name']} exists")
    except mutex.Busy:
        return error_response(503, "another pool is being defined; retry", headers={"Retry-After": "1"})
    return created(render(pool), f"/address-pools/{pool['name']}")


@bp.get("/address-pools")
def listing():
    """List the pools with their utilisation."""
    pools = database()[POOLS].find().sort("name", 1)
    return jsonify({"_items": [render(p) for p in pools]})


@bp.get("/address-pools/<name>")
def show(name):
    """Answer one pool with its utilisation."""
    pool = _find(name)
    if pool is None:
        return error_response(404, f"no pool {name}")
    return jsonify(render(pool))


@bp.delete("/address-pools/<name>")
def delete(name):
    """Delete a pool definition (its addresses stay as they are)."""
    require_role("admin")
    pool = _find(name)
    if pool is None:
        return error_response(404, f"no pool {name}")
    database()[POOLS].delete_one({"_id": pool["_id"]})
    pool_hints.forget(database(), pool)
    counts.forget_pool(database(), pool)
    return "", 204


@bp.post("/address-pools/<name>/allocate")
def allocate(name):
    """Allocate the lowest free addresses of a pool, all or nothing."""
    user = require_role("operator", "admin")["username"]
    body = request.get_json(silent=True) if request.content_length else {}
    if not isinstance(body, dict):
        return error_response(400, "body must be a JSON object")
    pool = _find(name)
    if pool is None:
        return error_response(404, f"no pool {name}")
    req, issues = validate("allocation", body, user)
    if issues:
        return invalid("allocation", issues)
    alloc, _replayed = address_allocation.allocate(core(), pool, req, user, idempotency_key())
    return created({"pool": name, "addresses": alloc["addresses"], "owner": alloc["owner"], "_id": alloc["_id"]})


def _openapi():
    """The OpenAPI of the pool routes."""
    pool = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
    paths = {
        "/address-pools": {
            "get": op("listPools", "List address pools", "address-pools", parameters=[
                query(name, "accepted for clients that page; the answer is every pool (at most POOLS_MAX)",
                      {"type": "integer", "minimum": 1}) for name in ("page", "max_results")],
                      responses={"200": answer("PoolList", "pools"), **error_responses(503)}),
            "post": op("createPool", "Create an address pool", "address-pools", write=True,
                       requestBody=body_ref("PoolInput"),
                       responses={"201": answer("Pool", "created"), "409": {"$ref": "#/components/responses/Error409"},
                                   **WRITE_ERRORS}),
        },
        "/address-pools/{name}": {
            "parameters": [pool],
            "get": op("getPool", "Get a pool and its utilisation", "address-pools",
                      responses={"200": answer("Pool", "the pool"), **error_responses(404, 503)}),
            "delete": op("deletePool", "Delete a pool", "address-pools", scope="admin",
                         responses={"204": {"description": "deleted"}, **error_responses(401, 403, 404, 409, 503)}),
        },
        "/address-pools/{name}/allocate": {"parameters": [pool], "post": op(
            "allocate", "Allocate free addresses of a pool", "address-pools", scope="reserve",
            parameters=[IDEMPOTENCY], requestBody=body_ref("AllocateRequest", required=False),
            responses={"201": answer("Allocation", "allocated"), **error_responses(404, 409), **WRITE_ERRORS})},
    }
    schemas = {
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
    }
    return paths, schemas, [{"name": "address-pools", "description": "address pools and race-free address allocation"}]


def init_app(app):
    """Register the pool routes and the unique pool name."""
    register(app, *_openapi())
    indexes = app.extensions["rm_indexes"]
    indexes.add(POOLS, [("name", 1)], unique=True, name="name_unique")
    # Finds a pool's claimed addresses by range on MongoDB (FerretDB scans; see docs/operations/indexes.md).
    indexes.add(ADDRESS_CLAIMS, [("kind", 1), ("ipkey", 1)], name="kind_ipkey")
    app.register_blueprint(bp)
