"""GET /openapi.json: an OpenAPI 3 document of the routes the app declared (routemeta.py) and serves.

Each module with routes (routes/*.py, the Eve resources included; metrics.py) declares them with
`register(app, paths, schemas, tags)`, built with the helpers at the end of this module; the same
declarations decide token scopes and accepted query parameters (routemeta.py). A path is published
only while the app really has that route. The request bodies of our routes are generated from
their Cerberus schemas (core/constraints.BODIES, see BODY_SCHEMAS).
"""

import copy
import re

from .. import __version__
from ..core.constraints import BODIES
from ..core.tokens import SCOPES
from .routemeta import common_parameters, register, shape, table, templates  # noqa: F401  (register, templates: ours)

OPENAPI_VERSION = "3.0.3"
JSON = "application/json"

TYPES = {
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
    400: "Bad request: the body or a query parameter is malformed, or the query or a header holds a NUL character",
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
    schema = copy.deepcopy(TYPES.get(kind, {})) if isinstance(kind, str) else {}
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
    write_result = {"type": "object", "properties": {
        "_status": {"type": "string", "enum": ["OK", "ERR"]}, "_id": {"type": "string"},
        "_etag": {"type": "string"}, "_created": {"type": "string"}, "_updated": {"type": "string"},
        "_links": {"type": "object"}, "_items": {"type": "array", "items": {"type": "object"}},
        "_issues": {"type": "object"}}}
    return {
        "schemas": {"Error": error, "WriteResult": write_result},
        "responses": responses,
        "parameters": common_parameters(app.config),
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


def rule_paths(app):
    """Return the app's routes as OpenAPI path templates with their methods."""
    found = {}
    for rule in app.url_map.iter_rules():
        for path in templates(rule.rule):
            found.setdefault(path, set()).update(m.lower() for m in rule.methods - {"HEAD", "OPTIONS"})
    return found


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
    """Return the OpenAPI document of this app: its declared routes (routemeta.py) that it serves."""
    components = _common_components(app)
    routes = table(app)
    served = {shape(p): methods for p, methods in rule_paths(app).items()}
    paths = {}
    for path, item in copy.deepcopy(routes.paths).items():
        methods = served.get(shape(path), set())
        kept = {k: v for k, v in item.items() if k in methods or k == "parameters"}
        if set(kept) - {"parameters"}:
            paths.setdefault(path, {}).update(kept)
    components["schemas"].update(routes.schemas)
    components["schemas"].update({ref: body_schema(name, app.config) for ref, name in BODY_SCHEMAS.items()})
    components["schemas"] = _reachable(paths, components["schemas"])
    for path, item in paths.items():
        for method, op in item.items():
            if method != "parameters":
                # Any operation refuses a query parameter it does not declare (400); credentials sent
                # anywhere are checked: a dead token is 401 even on an open read, and repeated failures
                # are 429. A NUL character is refused everywhere (errors.check_nul): 400 in the query or
                # a header, 404 in a path variable.
                common = error_responses(400, 401, 429, *((404,) if "{" in path else ()))
                op["responses"] = {**op["responses"], **{k: v for k, v in common.items()
                                                         if k not in op["responses"]}}
    used = {t for item in paths.values() for op in item.values() if isinstance(op, dict) for t in op.get("tags", [])}
    tags = [t for t in routes.tags if t["name"] in used]
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


def op(op_id, summary, tag, write=False, scope=None, **rest):
    """Return an operation, declaring who may call it (routemeta.py: the token check reads it from here).

    `scope`: the least token scope that may call it: read (open to all, the default), reserve
    (reserving, releasing, allocating), write (`write=True`) or admin; above read it needs an
    operator's account (an admin's for admin) and publishes x-roles and x-token-scopes.
    """
    scope = scope or ("write" if write else "read")
    operation = {"operationId": op_id, "summary": summary, "tags": [tag],
                 "security": copy.deepcopy(CREDENTIALS) if scope != "read" else []}
    if scope != "read":
        roles = ["admin"] if scope == "admin" else ["operator", "admin"]
        scopes = list(SCOPES[SCOPES.index(scope):])
        operation["description"] = f"Needs role {' or '.join(roles)}; a token needs scope {', '.join(scopes)}."
        operation["x-roles"] = roles
        operation["x-token-scopes"] = scopes
    operation.update(rest)
    return operation


def signed_in(op_id, summary, **rest):
    """Return an operation of the token routes: anybody signed in, for their own tokens (an admin: anyone's).

    Any token passes the scope check; the routes apply their own rules (routes/tokens.py).
    """
    return {"operationId": op_id, "summary": summary, "tags": ["tokens"], "security": copy.deepcopy(CREDENTIALS),
            "x-roles": ["reader", "operator", "admin"], "x-token-scopes": list(SCOPES), **rest}


def query(name, description, schema=None, *, required=False, field=None):
    """Return a query parameter; `field`: it filters the listing by that field (x-filter: exact, AND with where)."""
    param = {"name": name, "in": "query", "schema": schema or {"type": "string"}, "description": description}
    if required:
        param["required"] = True
    if field:
        param["x-filter"] = field
    return param
