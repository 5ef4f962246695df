"""GET /openapi.json; /docs, a readable page rendered from it (our template, no CDN); /docs/swagger, Swagger UI.

Swagger UI's files come from the pinned flask-swagger-ui package (its dist/ folder, the upstream
build) and are served from here; the page's own script is a static file, so no inline script runs.
"""

import functools
import json
import shlex
from importlib import resources

from flask import abort, current_app, jsonify, make_response, render_template, request, send_from_directory

from ..api import openapi
from . import CSP, bp

# Only what the page loads; the package's index.html and OAuth2 redirect page (inline scripts) stay out.
SWAGGER_ASSETS = frozenset({"swagger-ui-bundle.js", "swagger-ui.css", "favicon-32x32.png", "favicon-16x16.png"})
# Swagger UI 5 needs nothing beyond the dashboard's policy: its script and ours are files from 'self',
# React sets styles through the DOM (which style-src does not govern), its icons are data: images,
# and /openapi.json and "Try it out" requests go to this server (connect-src 'self'). The browser test
# checks that no violation is reported while an operation is tried.
SWAGGER_CSP = CSP

METHODS = ("get", "post", "put", "patch", "delete")


def _resolve(spec, node):
    while isinstance(node, dict) and "$ref" in node:
        parts = node["$ref"].lstrip("#/").split("/")
        node = spec
        for part in parts:
            node = node[part]
    return node


def describe(spec, schema):
    """Return a short human text for a schema: type, enum, limits."""
    schema = schema or {}
    if "$ref" in schema:
        return schema["$ref"].rsplit("/", 1)[-1]
    if "oneOf" in schema:
        return " or ".join(describe(spec, s) for s in schema["oneOf"])
    kind = schema.get("type", "any")
    if kind == "array":
        kind = f"array of {describe(spec, schema.get('items'))}"
    bits = [kind + (" or null" if schema.get("nullable") else "")]
    if "format" in schema:
        bits.append(schema["format"])
    if "enum" in schema:
        bits.append("one of " + ", ".join(map(str, schema["enum"])))
    for key, label in (("maxLength", "max length"), ("minimum", "min"), ("maximum", "max"), ("pattern", "pattern"),
                       ("default", "default")):
        if key in schema:
            bits.append(f"{label} {schema[key]}")
    if schema.get("description"):
        bits.append(schema["description"])
    return "; ".join(bits)


def rows(spec, schema):
    """Return [(name, required, description)] of an object schema's properties."""
    schema = _resolve(spec, schema) or {}
    required = set(schema.get("required", []))
    return [(name, name in required, describe(spec, prop)) for name, prop in schema.get("properties", {}).items()]


def example(spec, schema, depth=0):
    """Return a small example value of a schema: its required fields with plausible values."""
    schema = _resolve(spec, schema) or {}
    if "oneOf" in schema:
        return example(spec, schema["oneOf"][0], depth)
    if "default" in schema:
        return schema["default"]
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type")
    if kind == "object" and depth < 3:
        props = schema.get("properties", {})
        return {name: example(spec, props[name], depth + 1) for name in schema.get("required", []) if name in props}
    if kind == "array":
        return [example(spec, schema.get("items"), depth + 1)]
    if kind in ("integer", "number"):
        return schema.get("minimum", 1)
    if kind == "boolean":
        return True
    return "10.0.0.1" if "IPv4" in schema.get("description", "") else "string"


def curl(spec, method, path, op, params):
    """Return a curl command line that calls an operation."""
    words = ["curl"]
    if op.get("security"):
        words += ["-u", "USER:PASSWORD"]
    if method != "get":
        words += ["-X", method.upper()]
    for param in params:
        if param.get("in") == "header" and param.get("required"):
            words += ["-H", f"{param['name']}: VALUE"]
    words.append(request.host_url.rstrip("/") + path)
    body = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
    if body:
        words += ["-H", "Content-Type: application/json", "-d", json.dumps(example(spec, body))]
    return shlex.join(words)


def operations(spec):
    """Return [(tag, [(method, path, operation, parameters)])] in document order."""
    groups = {t["name"]: [] for t in spec.get("tags", [])}
    for path, item in spec["paths"].items():
        shared = item.get("parameters", [])
        for method in METHODS:
            if method in item:
                op = item[method]
                params = [_resolve(spec, p) for p in shared + op.get("parameters", [])]
                groups.setdefault(op.get("tags", ["other"])[0], []).append((method, path, op, params))
    return [(tag, ops) for tag, ops in groups.items() if ops]


@bp.get("/openapi.json")
def openapi_json():
    """Return the OpenAPI 3 document of this server."""
    return jsonify(openapi.document(current_app))


@bp.get("/docs")
def docs():
    """Show the API documentation, rendered from /openapi.json."""
    spec = openapi.document(current_app)
    return render_template("docs.html", spec=spec, groups=operations(spec), rows=rows, describe=describe,
                           resolve=_resolve, curl=curl)


@functools.cache
def swagger_dist():
    """Return the directory of Swagger UI's files and their version (from the pinned flask-swagger-ui)."""
    dist = resources.files("flask_swagger_ui") / "dist"
    version = (dist / "VERSION").read_text(encoding="utf-8").strip().lstrip("v")
    return str(dist), version


@bp.get("/docs/swagger")
def swagger():
    """Show Swagger UI over /openapi.json: every operation with "Try it out", HTTP Basic under "Authorize"."""
    response = make_response(render_template("swagger.html", swagger_version=swagger_dist()[1]))
    response.headers["Content-Security-Policy"] = SWAGGER_CSP
    return response


@bp.get("/docs/swagger/assets/<name>")
def swagger_asset(name):
    """Serve one of Swagger UI's files."""
    if name not in SWAGGER_ASSETS:
        abort(404)
    return send_from_directory(swagger_dist()[0], name)
