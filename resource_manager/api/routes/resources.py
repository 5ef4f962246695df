"""Eve's routes (machines and addresses): their declarations, and the field filters of their collections.

Eve serves /machines, /public-addresses and /private-addresses from schema.DOMAIN; this module
declares them as every routes module declares its own (routemeta.py): the OpenAPI of each URL
and method, the token scope each write needs (an address's DELETE, releasing it, is open to a
`reserve` token: api/tokens.py), and the query parameters each accepts. Among those, the field
filters of a collection GET (FILTERS): ``GET /machines?state=needs_repair&owner=ci`` lists the
machines whose fields equal those values exactly, combined with ?where by AND
(docs/reference/api-queries.md).
"""

import copy

from ...schema import MACHINE_STATES, NAME_FIELDS
from ..datalayer import Exact
from ..eveglue import on
from ..openapi import CREDENTIALS, JSON, TYPES, camel, error_responses, object_schema, query, register, singular
from ..routemeta import current_route

WRITE_SCOPES = ("write", "admin")
RELEASE_SCOPES = ("reserve", "write", "admin")
ADDRESSES = ("public-addresses", "private-addresses")
# The field filters of each collection: query parameter -> (field, description, schema).
FILTERS = {
    "machines": {
        "state": ("state", "machines in this state", {"type": "string", "enum": list(MACHINE_STATES)}),
        "owner": ("owner", "machines of this owner (exactly)", None),
        "job_id": ("job_id", "machines of this job (exactly)", None),
    },
    "public-addresses": {"owner": ("owner", "addresses of this owner (exactly)", None)},
    "private-addresses": {"owner": ("owner", "addresses of this owner (exactly)", None)},
}


def _refs(*names):
    return [{"$ref": f"#/components/parameters/{name}"} for name in names]


def _filters(resource):
    return [query(name, f"only {text}; with where: both must match", schema, field=field)
            for name, (field, text, schema) in FILTERS.get(resource, {}).items()]


def _security(settings, method, item):
    public = settings["public_item_methods" if item else "public_methods"]
    return [] if method in public else copy.deepcopy(CREDENTIALS)


def _roles(settings, method, item):
    if method == "GET":
        return None
    return settings["allowed_item_write_roles" if item else "allowed_write_roles"] or None


def _operation(op_id, summary, tag, security, roles, scopes=WRITE_SCOPES, **rest):
    op = {"operationId": op_id, "summary": summary, "tags": [tag], "security": security}
    if roles:
        op["description"] = f"Needs role {' or '.join(roles)}; a token needs scope {', '.join(scopes)}."
        op["x-roles"] = list(roles)
        op["x-token-scopes"] = list(scopes)
    op.update(rest)
    return op


def resource_paths(resource, settings):
    """Return (paths, schemas) of one Eve resource: its collection URL and its item URL."""
    name = singular(resource)
    ref = f"#/components/schemas/{name}"
    meta = {"_id": TYPES["objectid"], "_created": {"type": "string", "format": "date-time"},
            "_updated": {"type": "string", "format": "date-time"}, "_etag": {"type": "string"},
            "_links": {"type": "object"}}
    full = object_schema(settings["schema"], with_required=False)
    full["properties"].update(meta)
    schemas = {
        name: full,
        f"{name}Input": object_schema(settings["schema"]),
        f"{name}Patch": object_schema(settings["schema"], with_required=False),
        f"{name}List": {"type": "object", "properties": {
            "_items": {"type": "array", "items": {"$ref": ref}},
            "_meta": {"type": "object", "properties": {"page": {"type": "integer"},
                                                        "max_results": {"type": "integer"},
                                                        "total": {"type": "integer"}}},
            "_links": {"type": "object"}}},
    }
    tag, url = resource, "/" + settings["url"]
    input_ref = {"$ref": f"#/components/schemas/{name}Input"}
    collection = {}
    if "GET" in settings["resource_methods"]:
        collection["get"] = _operation(
            f"list{camel(resource)}", f"List {resource}", tag, _security(settings, "GET", False), None,
            parameters=[*_refs("where", "sort", "projection", "page", "max_results", "pretty"),
                        *_filters(resource)],
            responses={"200": {"description": f"every matching item of {resource}, or one page of them "
                                              "with page/max_results (then _links.next leads on)",
                               "content": {JSON: {"schema": {"$ref": f"#/components/schemas/{name}List"}}}},
                       **error_responses(400, 503)})
    if "POST" in settings["resource_methods"]:
        collection["post"] = _operation(
            f"create{name}", f"Create one {name} or several", tag, _security(settings, "POST", False),
            _roles(settings, "POST", False),
            requestBody={"required": True, "content": {JSON: {"schema": {"oneOf": [
                input_ref, {"type": "array", "items": input_ref, "minItems": 1}]}}}},
            responses={"201": {"description": "created",
                               "content": {JSON: {"schema": {"$ref": "#/components/schemas/WriteResult"}}}},
                       **error_responses(400, 401, 403, 408, 409, 413, 415, 422, 503)})
    field = NAME_FIELDS.get(resource, "_id")
    param = {"name": field.lstrip("_") or "id", "in": "path", "required": True, "schema": {"type": "string"},
             "description": f"the {name}'s {field}" + (", or its _id" if field != "_id" else "")}
    item = {"parameters": [param]}
    item_methods = settings["item_methods"]
    etag_header = {"ETag": {"schema": {"type": "string"}, "description": "send it back as If-Match to change"}}
    if "GET" in item_methods:
        item["get"] = _operation(
            f"get{name}", f"Get one {name}", tag, _security(settings, "GET", True), None,
            parameters=_refs("IfNoneMatch", "projection", "pretty"),
            responses={"200": {"description": f"the {name}", "headers": etag_header,
                               "content": {JSON: {"schema": {"$ref": ref}}}},
                       "304": {"description": "not modified since If-None-Match"},
                       **error_responses(400, 404, 409, 503)})
    write_errors = error_responses(400, 401, 403, 404, 408, 409, 412, 413, 415, 422, 428, 503)
    for method, verb, body_ref in (("PATCH", "update", f"{name}Patch"), ("PUT", "replace", f"{name}Input")):
        if method in item_methods:
            item[method.lower()] = _operation(
                f"{verb}{name}", f"{verb.capitalize()} one {name}", tag, _security(settings, method, True),
                _roles(settings, method, True), parameters=[{"$ref": "#/components/parameters/IfMatch"}],
                requestBody={"required": True,
                             "content": {JSON: {"schema": {"$ref": f"#/components/schemas/{body_ref}"}}}},
                responses={"200": {"description": f"{verb}d", "headers": etag_header,
                                   "content": {JSON: {"schema": {"$ref": "#/components/schemas/WriteResult"}}}},
                           **write_errors})
    if "DELETE" in item_methods:
        item["delete"] = _operation(
            f"delete{name}", f"Delete one {name}", tag, _security(settings, "DELETE", True),
            _roles(settings, "DELETE", True), parameters=[{"$ref": "#/components/parameters/IfMatch"}],
            scopes=RELEASE_SCOPES if resource in ADDRESSES else WRITE_SCOPES,
            responses={"204": {"description": "deleted"}, **error_responses(401, 403, 404, 409, 412, 428, 503)})
    paths = {url: collection, f"{url}/{{{param['name']}}}": item}
    return {p: v for p, v in paths.items() if set(v) - {"parameters"}}, schemas


def _apply_filters(request, lookup):
    # Eve's pre-GET hook of a resource (items too: their declarations have no filters). The values
    # were checked (routemeta.check_query); Exact keeps them the text they are (datalayer.py).
    route = current_route()
    for name, field in (route.filters.items() if route is not None else ()):
        if name in request.args:
            lookup[field] = Exact(request.args[name])


def init_app(app):
    """Declare Eve's routes, and filter its collection GETs by the declared field filters."""
    for resource, settings in app.config["DOMAIN"].items():
        if settings.get("internal_resource"):
            continue
        paths, schemas = resource_paths(resource, settings)
        register(app, paths, schemas, [{"name": resource, "description": f"the {resource} collection (Eve)"}])
        on(app, "pre_GET", _apply_filters, resource)
