"""GET /openapi.json: an OpenAPI 3 document generated from the Eve DOMAIN and our own routes.

Each module with routes of its own (routes/*.py, metrics.py) documents them with
`register(app, paths, schemas, tags)`, built with the helpers at the end of this module; a path
is published only while the app really has that route. The request bodies of our routes are
generated from their Cerberus schemas (core/constraints.BODIES, see BODY_SCHEMAS).
"""

import copy
import re

from .. import __version__
from ..core.constraints import BODIES
from ..schema import NAME_FIELDS

OPENAPI_VERSION = "3.0.3"
JSON = "application/json"

_TYPES = {
    "string": {"type": "string"},
    "integer": {"type": "integer"},
    "float": {"type": "number"},
    "number": {"type": "number"},
    "boolean": {"type": "boolean"},
    "dict": {"type": "object"},
    "list": {"type": "array"},
    "datetime": {"type": "string", "format": "date-time"},
    "objectid": {"type": "string", "pattern": "^[0-9a-f]{24}$"},
}

ERRORS = {
    400: "Bad request: the body or a query parameter is malformed",
    401: "No or wrong credentials (HTTP Basic), or a token that is malformed, unknown, revoked or expired",
    403: "The user's role, or the token's scope, may not do this",
    404: "No such item",
    405: "Method not allowed here",
    408: "The request body did not arrive within BODY_TIMEOUT seconds",
    409: "Conflict: a unique field (name or address) is taken, or a 24-hex item URL is one item's _id "
         "and another's name",
    412: "If-Match does not match the item's current ETag: read it again",
    413: "Body too large",
    415: "Body is not application/json",
    422: "Validation failed: see _issues",
    428: "If-Match header required",
    429: "Too many failed logins or token attempts from here: retry after Retry-After seconds",
    503: "Database unavailable: retry after Retry-After seconds",
}


def error_responses(*codes):
    """Return the `responses` entries of these error codes, all in our error shape."""
    return {str(code): {"$ref": f"#/components/responses/Error{code}"} for code in codes}


def field_schema(rule):
    """Return the OpenAPI schema of one Cerberus field rule."""
    kind = rule.get("type")
    kind = kind[0] if isinstance(kind, list) and len(kind) == 1 else kind
    schema = copy.deepcopy(_TYPES.get(kind, {})) if isinstance(kind, str) else {}
    notes = []
    if "allowed" in rule:
        if kind == "list":
            schema["items"] = {"type": "string", "enum": list(rule["allowed"])}
        else:
            schema["enum"] = list(rule["allowed"])
    if "regex" in rule:
        pattern = rule["regex"]
        # Cerberus matches the whole value; JSON Schema patterns search, so anchor them.
        schema["pattern"] = (pattern if pattern.startswith("^") else "^" + pattern) + (
            "" if pattern.endswith("$") else "$")
    for ours, theirs in (("maxlength", "maxLength"), ("minlength", "minLength")):
        if ours in rule:
            schema["maxItems" if kind == "list" and ours == "maxlength" else
                   "minItems" if kind == "list" else theirs] = rule[ours]
    for ours, theirs in (("min", "minimum"), ("max", "maximum")):
        if ours in rule:
            schema[theirs] = rule[ours]
    if rule.get("nullable"):
        schema["nullable"] = True
    if "default" in rule:
        schema["default"] = copy.deepcopy(rule["default"])
    if kind == "dict":
        if isinstance(rule.get("schema"), dict):
            schema.update(object_schema(rule["schema"]))
        schema["additionalProperties"] = bool(rule.get("allow_unknown", "schema" not in rule))
    if kind == "list" and isinstance(rule.get("schema"), dict) and "items" not in schema:
        schema["items"] = field_schema(rule["schema"])
    if rule.get("ip_address"):
        notes.append("an IPv4 or IPv6 address, stored in canonical form")
    if rule.get("unique"):
        notes.append("unique")
    if notes:
        schema["description"] = "; ".join(notes)
    return schema


def body_schema(name, config):
    """Return the OpenAPI schema of one of our route bodies (core/constraints.BODIES), limits from `config`."""
    from .bodies import settled_schema

    rules = BODIES[name]
    schema = object_schema(settled_schema(name, config))
    schema["additionalProperties"] = False
    for field, prop in schema["properties"].items():
        rule, notes = rules[field], []
        if "default" in rule:
            prop["default"] = copy.deepcopy(rule["default"])
        if rule.get("nonblank") and "pattern" not in prop:
            prop["pattern"] = r"\S"
        if rule.get("where"):
            prop.update({"type": "object", "additionalProperties": True})
        if rule.get("mongo_keys"):
            notes.append("no key may be empty, start with '$' or contain '.'")
        if rule.get("max_setting"):
            notes.append(f"the server setting {rule['max_setting']} sets the maximum")
        meta = rule.get("meta") or {}
        notes = [meta["description"] if "description" in meta else meta.get("hint")] + notes
        if prop.get("description"):
            notes.append(prop["description"])
        if any(notes):
            prop["description"] = "; ".join(n.strip() for n in notes if n)
    return schema


def object_schema(fields, with_required=True):
    """Return the object schema of a Cerberus schema dict."""
    props = {name: field_schema(rule) for name, rule in fields.items() if not name.startswith("_")}
    schema = {"type": "object", "properties": props}
    required = sorted(n for n, r in fields.items() if r.get("required") and not n.startswith("_"))
    if with_required and required:
        schema["required"] = required
    return schema


def camel(name):
    """Return a resource name in CamelCase: public-addresses -> PublicAddresses."""
    return "".join(w.capitalize() for w in re.split(r"[-_]", name))


def singular(name):
    """Return a CamelCase singular name for a resource: public-addresses -> PublicAddress."""
    words = [w.capitalize() for w in re.split(r"[-_]", name)]
    last = words[-1]
    words[-1] = last[:-2] if last.endswith("sses") else last[:-1] if last.endswith("s") else last
    return "".join(words)


def _common_components(app):
    limit = app.config.get("PAGINATION_LIMIT", 1000)
    error = {"type": "object", "required": ["_status", "_error"], "properties": {
        "_status": {"type": "string", "enum": ["ERR"]},
        "_error": {"type": "object", "required": ["code", "message", "request_id"], "properties": {
            "code": {"type": "integer"}, "message": {"type": "string"},
            "request_id": {"type": "string", "pattern": "^[A-Za-z0-9._:-]{1,128}$",
                           "description": "this request's id, as in the X-Request-Id header and the log lines"}}},
        "_issues": {"type": "object", "additionalProperties": True,
                    "description": "per field: what is wrong with it (422 only)"}}}
    responses = {}
    for code, text in ERRORS.items():
        entry = {"description": text, "content": {JSON: {"schema": {"$ref": "#/components/schemas/Error"}}}}
        if code == 401:
            entry["headers"] = {"WWW-Authenticate": {"schema": {"type": "string"}}}
        if code in (429, 503):
            entry["headers"] = {"Retry-After": {"schema": {"type": "integer"}}}
        responses[f"Error{code}"] = entry
    params = {
        "where": {"name": "where", "in": "query", "schema": {"type": "string"}, "example": '{"state": "idle"}',
                  "description": "a MongoDB filter as JSON, e.g. {\"tags.memory\": {\"$gte\": 17179869184}}"},
        "sort": {"name": "sort", "in": "query", "schema": {"type": "string"}, "example": "-_updated,hostname",
                 "description": "fields to sort by, comma-separated; '-' for descending"},
        "projection": {"name": "projection", "in": "query", "schema": {"type": "string"},
                       "example": '{"hostname": 1}', "description": "fields to include (1) or exclude (0), JSON"},
        "page": {"name": "page", "in": "query", "schema": {"type": "integer", "minimum": 1, "default": 1},
                 "description": "the page to answer; without page and max_results every match is answered"},
        "max_results": {"name": "max_results", "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": limit},
                        "description": f"items per page ({app.config.get('PAGINATION_DEFAULT', 25)} when only page "
                                       "is given); without page and max_results every match is answered, "
                                       "streamed, with _meta.total at the end"},
        "IfMatch": {"name": "If-Match", "in": "header", "required": True, "schema": {"type": "string"},
                    "description": "the item's current _etag (from its ETag header); 428 without it, 412 if stale"},
        "IfNoneMatch": {"name": "If-None-Match", "in": "header", "required": False, "schema": {"type": "string"},
                        "description": "answer 304 if the item's ETag is still this"},
    }
    write_result = {"type": "object", "properties": {
        "_status": {"type": "string", "enum": ["OK", "ERR"]}, "_id": {"type": "string"},
        "_etag": {"type": "string"}, "_created": {"type": "string"}, "_updated": {"type": "string"},
        "_links": {"type": "object"}, "_items": {"type": "array", "items": {"type": "object"}},
        "_issues": {"type": "object"}}}
    return {
        "schemas": {"Error": error, "WriteResult": write_result},
        "responses": responses,
        "parameters": params,
        "securitySchemes": SECURITY_SCHEMES,
    }


SECURITY_SCHEMES = {
    "basicAuth": {"type": "http", "scheme": "basic",
                  "description": "accounts of the users file; roles reader < operator < admin"},
    "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "rm_<id>_<secret>",
                   "description": "an API token (POST /tokens, rmctl token create), acting with the weaker of its "
                                  "scope (read < reserve < write < admin) and its user's role; reserve reaches "
                                  "reserving, extending, releasing and allocating only"},
}
# Either scheme will do (OpenAPI: alternatives are separate entries).
CREDENTIALS = [{"basicAuth": []}, {"bearerAuth": []}]


def _security(settings, method, item):
    public = settings["public_item_methods" if item else "public_methods"]
    return [] if method in public else copy.deepcopy(CREDENTIALS)


def _roles(settings, method, item):
    if method == "GET":
        return None
    return settings["allowed_item_write_roles" if item else "allowed_write_roles"] or None


def _operation(op_id, summary, tag, security, roles, **rest):
    op = {"operationId": op_id, "summary": summary, "tags": [tag], "security": security}
    if roles:
        op["description"] = f"Needs role {' or '.join(roles)}."
        op["x-roles"] = list(roles)
    op.update(rest)
    return op


def resource_paths(app, resource, settings):
    """Return (paths, schemas) of one Eve resource: its collection URL and its item URL."""
    name = singular(resource)
    ref = f"#/components/schemas/{name}"
    meta = {"_id": _TYPES["objectid"], "_created": {"type": "string", "format": "date-time"},
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
            parameters=[{"$ref": f"#/components/parameters/{p}"}
                        for p in ("where", "sort", "projection", "page", "max_results")],
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
            parameters=[{"$ref": "#/components/parameters/IfNoneMatch"}],
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
            responses={"204": {"description": "deleted"}, **error_responses(401, 403, 404, 409, 412, 428, 503)})
    paths = {url: collection, f"{url}/{{{param['name']}}}": item}
    return {p: v for p, v in paths.items() if set(v) - {"parameters"}}, schemas


class Registry:
    """Path fragments that modules add for their own routes."""

    def __init__(self):
        self.paths = {}
        self.schemas = {}
        self.tags = []

    def add(self, paths, schemas=None, tags=None):
        """Add OpenAPI path items (and the component schemas they reference)."""
        for path, item in paths.items():
            self.paths.setdefault(path, {}).update(item)
        self.schemas.update(schemas or {})
        self.tags.extend(tags or [])


def register(app, paths, schemas=None, tags=None):
    """Document routes of a module of ours in /openapi.json."""
    app.extensions.setdefault("rm_openapi", Registry()).add(paths, schemas, tags)


_ANY = re.compile(r"<any\(([^)]*)\):[^<>]+>")


def templates(rule):
    """Return the OpenAPI path templates of a Werkzeug rule (one per choice of an `any` converter)."""
    match = _ANY.search(rule)
    if match:
        choices = [c.strip().strip("'\"") for c in match.group(1).split(",")]
        return [t for c in choices for t in templates(rule[:match.start()] + c + rule[match.end():])]
    return [re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule)]


def rule_paths(app):
    """Return the app's routes as OpenAPI path templates with their methods."""
    found = {}
    for rule in app.url_map.iter_rules():
        for path in templates(rule.rule):
            found.setdefault(path, set()).update(m.lower() for m in rule.methods - {"HEAD", "OPTIONS"})
    return found


def shape(path):
    """Return a path with its parameter names blanked, to compare templates."""
    return re.sub(r"\{[^}]*\}", "{}", path)


def _refs(node):
    if isinstance(node, dict):
        ref = node.get("$ref", "")
        if ref.startswith("#/components/schemas/"):
            yield ref.rsplit("/", 1)[-1]
        for value in node.values():
            yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def _reachable(paths, schemas):
    # Only the schemas that served paths use: no Reservation schema on a server without reservations.
    keep, todo = {"Error"}, list(_refs(paths))
    while todo:
        name = todo.pop()
        if name not in keep and name in schemas:
            keep.add(name)
            todo.extend(_refs(schemas[name]))
    return {name: schema for name, schema in schemas.items() if name in keep}


def document(app):
    """Return the OpenAPI document of this app."""
    components = _common_components(app)
    paths, tags = {}, []
    for resource, settings in app.config["DOMAIN"].items():
        if settings.get("internal_resource"):
            continue
        res_paths, schemas = resource_paths(app, resource, settings)
        paths.update(res_paths)
        components["schemas"].update(schemas)
        tags.append({"name": resource, "description": f"the {resource} collection (Eve)"})
    served = {shape(p): methods for p, methods in rule_paths(app).items()}
    registry = app.extensions.get("rm_openapi") or Registry()
    fragments, own_tags = registry.paths, registry.tags
    schemas = {**registry.schemas, **{ref: body_schema(name, app.config) for ref, name in BODY_SCHEMAS.items()}}
    for path, item in fragments.items():
        methods = served.get(shape(path), set())
        kept = {k: v for k, v in item.items() if k in methods or k == "parameters"}
        if set(kept) - {"parameters"}:
            paths.setdefault(path, {}).update(kept)
    components["schemas"].update(schemas)
    components["schemas"] = _reachable(paths, components["schemas"])
    for item in paths.values():
        for method, op in item.items():
            if method != "parameters":
                # Credentials sent anywhere are checked: a dead token is 401 even on an open read, and
                # repeated failures are 429.
                op["responses"] = {**op["responses"], **{k: v for k, v in error_responses(401, 429).items()
                                                         if k not in op["responses"]}}
    used = {t for item in paths.values() for op in item.values() if isinstance(op, dict) for t in op.get("tags", [])}
    tags += [t for t in own_tags if t["name"] in used]
    return {
        "openapi": OPENAPI_VERSION,
        "info": {"title": "ResourceManager API", "version": __version__,
                 "description": "Track and hand out lab and datacenter machines and IP addresses. Reads are "
                                "public; writes need HTTP Basic credentials of an operator or admin, or an API "
                                "token (Authorization: Bearer) whose scope and user allow them. Errors "
                                "are JSON: {\"_status\": \"ERR\", "
                                "\"_error\": {\"code\", \"message\", \"request_id\"}}. "
                                "Every answer carries X-Request-Id: the caller's if it sent one of 1-128 "
                                "characters [A-Za-z0-9._:-], else a new one."},
        "servers": [{"url": "/"}],
        "tags": tags,
        "paths": dict(sorted(paths.items())),
        "components": components,
    }


# -- helpers for the modules that document their routes (register) ------------------------------

# The component schema of each route body in core/constraints.BODIES, generated from it.
BODY_SCHEMAS = {"ReservationRequest": "reservation", "Extend": "extension", "PoolInput": "pool",
                "AllocateRequest": "allocation", "TokenRequest": "token", "WebhookRequest": "webhook"}
# The operations a token of scope `reserve` reaches (api/tokens.py's RESERVE_ROUTES, by operationId).
RESERVE_OPERATIONS = frozenset({"reserve", "extend", "release", "releaseJob", "allocate"})
IDEMPOTENCY = {"name": "Idempotency-Key", "in": "header", "required": False, "schema": {"type": "string"},
               "description": "repeat a request with the same key to get the first answer, not a second grant"}
WRITE_ERRORS = error_responses(400, 401, 403, 408, 415, 422, 503)


def answer(ref_or_schema, description):
    """Return a JSON response: a component schema's name, or a schema."""
    schema = {"$ref": f"#/components/schemas/{ref_or_schema}"} if isinstance(ref_or_schema, str) else ref_or_schema
    return {"description": description, "content": {JSON: {"schema": schema}}}


def body_ref(ref, required=True):
    """Return a JSON request body of component schema `ref`."""
    return {"required": required, "content": {JSON: {"schema": {"$ref": f"#/components/schemas/{ref}"}}}}


def op(op_id, summary, tag, write=False, **rest):
    """Return an operation; `write`: it needs an operator or admin (a token: a scope that allows it)."""
    operation = {"operationId": op_id, "summary": summary, "tags": [tag],
                 "security": copy.deepcopy(CREDENTIALS) if write else []}
    if write:
        scopes = ["reserve", "write", "admin"] if op_id in RESERVE_OPERATIONS else ["write", "admin"]
        operation["description"] = f"Needs role operator or admin; a token needs scope {', '.join(scopes)}."
        operation["x-roles"] = ["operator", "admin"]
        operation["x-token-scopes"] = scopes
    operation.update(rest)
    return operation


def signed_in(op_id, summary, **rest):
    """Return an operation of the token routes: anybody signed in, for their own tokens (an admin: anyone's)."""
    return {"operationId": op_id, "summary": summary, "tags": ["tokens"], "security": copy.deepcopy(CREDENTIALS),
            "x-roles": ["reader", "operator", "admin"], **rest}
