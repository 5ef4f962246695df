"""Route metadata, declared once: each operation's token scope and the query parameters it accepts.

Every module with routes declares its operations in its ``_openapi()``: OpenAPI operations, made
with openapi.op() and friends, and files them with ``register(app, paths, schemas, tags)`` into
the app's RouteTable. One declaration, three readers:

- api/openapi.py publishes the table as /openapi.json;
- api/tokens.py lets a token write only where its scope reaches the operation's ``x-token-scopes``;
- `check_query()` answers 400 for a query parameter the operation does not declare, one given
  twice, a field filter (``x-filter``) left empty, a value outside a declared ``enum``, and a NUL
  character in any value; the collections' field filters (routes/resources.py) read their
  fields from here too.

An operation is found by its path template and method, from the URL rule a request matched
(HEAD is GET's). Routes nobody declared (the dashboard, its assets, /docs) are not checked here.
"""

import json
import re
from dataclasses import dataclass, field

from flask import current_app, g, request

from ..core.tokens import SCOPES
from .errors import error_response

PARAMETER_REF = "#/components/parameters/"
SAFE_METHODS = ("get", "head", "options")


def common_parameters(config):
    """Return the parameters Eve's URLs share (components/parameters of /openapi.json), by component name."""
    limit = config.get("PAGINATION_LIMIT", 1000)
    return {
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
                        "description": f"items per page ({config.get('PAGINATION_DEFAULT', 25)} when only page "
                                       "is given); without page and max_results every match is answered, "
                                       "streamed, with _meta.total at the end"},
        "pretty": {"name": "pretty", "in": "query", "schema": {"type": "string"}, "allowEmptyValue": True,
                   "description": "present: the JSON answer is indented"},
        "IfMatch": {"name": "If-Match", "in": "header", "required": True, "schema": {"type": "string"},
                    "description": "the item's current _etag (from its ETag header); 428 without it, 412 if stale"},
        "IfNoneMatch": {"name": "If-None-Match", "in": "header", "required": False, "schema": {"type": "string"},
                        "description": "answer 304 if the item's ETag is still this"},
    }


@dataclass(frozen=True)
class Route:
    """One declared operation: its path template, method, OpenAPI operation and parameters (refs resolved)."""

    path: str
    method: str
    operation: dict
    parameters: tuple = ()
    query: dict = field(default_factory=dict)  # {name: parameter} of the query parameters it accepts

    @property
    def scope(self):
        """Return the least token scope that may call it: read for reads, else its first x-token-scopes (write)."""
        scopes = self.operation.get("x-token-scopes")
        if scopes:
            return min(scopes, key=SCOPES.index)
        return "read" if self.method in SAFE_METHODS else "write"

    @property
    def filters(self):
        """Return {query parameter: document field} of its field filters (x-filter)."""
        return {name: p["x-filter"] for name, p in self.query.items() if p.get("x-filter")}

    def query_problem(self, args):
        """Return why the query arguments `args` (a MultiDict) are refused, or None when they are fine."""
        for name in args:
            param = self.query.get(name)
            if param is None:
                accepted = ", ".join(sorted(self.query)) or "none"
                return (f"unknown query parameter ?{_shown(name)} for {self.method.upper()} {self.path}; "
                        f"accepted: {accepted}")
            values = args.getlist(name)
            if len(values) > 1:
                hint = f"; for any of several values use where={{\"{param['x-filter']}\": {{\"$in\": [...]}}}}" \
                    if param.get("x-filter") else ""
                return f"?{name} is given {len(values)} times: give it once{hint}"
            value = values[0]
            if "\0" in value:
                return f"?{name} contains a NUL character"
            if param.get("x-filter") and not value:
                return (f"?{name} is empty: give a value, or leave it out (items without one: "
                        f"where={{\"{param['x-filter']}\": null}})")
            allowed = (param.get("schema") or {}).get("enum")
            if allowed and value not in allowed:
                return f"?{name} must be one of {', '.join(map(str, allowed))}, not '{_shown(value)}'"
        return None


def _shown(text):
    # In a message: short, and with control characters escaped.
    return json.dumps(text[:64])[1:-1]


class RouteTable:
    """The declared operations of an app, as modules registered them (and /openapi.json shows them)."""

    def __init__(self, common):
        self.common = common  # the shared parameters, by component name (common_parameters)
        self.paths = {}
        self.schemas = {}
        self.tags = []
        self._index = None
        self._found = {}  # (rule, method) -> Route or None, for rules of one template

    def add(self, paths, schemas=None, tags=None):
        """Add OpenAPI path items (and the component schemas they reference)."""
        for path, item in paths.items():
            self.paths.setdefault(path, {}).update(item)
        self.schemas.update(schemas or {})
        self.tags.extend(tags or [])
        self._index = None
        self._found = {}

    def routes(self):
        """Return every declared operation as a Route."""
        found = []
        for path, item in self.paths.items():
            shared = item.get("parameters", [])
            for method, operation in item.items():
                if method == "parameters":
                    continue
                params = tuple(self._resolve(p) for p in [*shared, *operation.get("parameters", [])])
                query = {p["name"]: p for p in params if p.get("in") == "query"}
                found.append(Route(path, method, operation, params, query))
        return found

    def _resolve(self, param):
        ref = param.get("$ref", "")
        return self.common[ref[len(PARAMETER_REF):]] if ref.startswith(PARAMETER_REF) else param

    def find(self, rule, method, path=None):
        """Return the Route of a Werkzeug rule (e.g. "/machines/<regex(...):_id>") and method, or None.

        `path`, the request's, picks among the templates of a rule with an `any` converter.
        """
        method = "get" if method.lower() == "head" else method.lower()
        if (rule, method) in self._found:
            return self._found[(rule, method)]
        if self._index is None:
            self._index = {(shape(r.path), r.method): r for r in self.routes()}
        choices = templates(rule)
        if len(choices) == 1 or path is None:
            chosen = choices
        else:
            chosen = [t for t in choices if _pattern(t).fullmatch(path)] or choices
        found = next((self._index[key] for key in ((shape(t), method) for t in chosen) if key in self._index), None)
        if len(choices) == 1:
            self._found[(rule, method)] = found
        return found


def table(app):
    """Return the app's RouteTable (made on first use)."""
    routes = app.extensions.get("rm_routes")
    if routes is None:
        routes = app.extensions["rm_routes"] = RouteTable(common_parameters(app.config))
    return routes


def register(app, paths, schemas=None, tags=None):
    """Declare routes of a module of ours: OpenAPI path items, with the component schemas and tags they use."""
    table(app).add(paths, schemas, tags)


def current_route():
    """Return the Route of this request's operation, or None when nobody declared it."""
    if "rm_route" not in g:
        rule = request.url_rule
        g.rm_route = None if rule is None else table(current_app).find(rule.rule, request.method, request.path)
    return g.rm_route


def check_query():
    """Answer 400 when a declared operation gets a query argument it does not accept (see the docstring)."""
    if request.method == "OPTIONS":
        return None
    route = current_route()
    problem = route.query_problem(request.args) if route is not None else None
    return error_response(400, problem) if problem else None


# -- path templates: Werkzeug rules as OpenAPI paths ------------------------------------------------

_ANY = re.compile(r"<any\(([^)]*)\):[^<>]+>")


def templates(rule):
    """Return the OpenAPI path templates of a Werkzeug rule (one per choice of an `any` converter)."""
    match = _ANY.search(rule)
    if match:
        choices = [c.strip().strip("'\"") for c in match.group(1).split(",")]
        return [t for c in choices for t in templates(rule[:match.start()] + c + rule[match.end():])]
    return [re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule)]


def shape(path):
    """Return a path with its parameter names blanked, to compare templates."""
    return re.sub(r"\{[^}]*\}", "{}", path)


def _pattern(template):
    return re.compile("".join(".+" if part.startswith("{") else re.escape(part)
                              for part in re.split(r"(\{[^}]*\})", template)))


def init_app(app):
    """Check every declared operation's query arguments before the route (or Eve) reads them."""
    app.before_request(check_query)
