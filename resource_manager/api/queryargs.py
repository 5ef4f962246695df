"""Refuse malformed ?where, ?sort, ?projection, ?max_results and ?page with a clear 400."""

import ast
import re

from flask import request

from .errors import check_value, error_response, loads_strict
from .eveglue import eve_endpoint, parse_python_where

# The query operators a client may use. An allow-list, not Eve's deny-list: an
# operator nobody thought of is refused rather than handed to the database.
ALLOWED_OPERATORS = frozenset({
    "$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin",
    "$and", "$or", "$nor", "$not", "$exists", "$type", "$all", "$elemMatch", "$size",
})
# A field path: names of letters, digits, _ and -, joined by dots.
FIELD = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*(\.[A-Za-z0-9_-]+)*$")
# (page - 1) * max_results must fit the database's 64-bit skip.
MAX_PAGE = 10**9


class QueryError(ValueError):
    """A query argument no client should send; the message names it."""


def _json_object(arg, text, example):
    """Return `text` parsed as a JSON object. Raises QueryError naming ?`arg`."""
    try:
        spec = loads_strict(text)
    except ValueError as e:
        raise QueryError(f"?{arg} {e}") from None
    if not isinstance(spec, dict):
        raise QueryError(f"?{arg} must be a JSON object such as {example}")
    return spec


def check_where(value):
    """Return the filter of a ?where (JSON or Eve's Python syntax). Raises QueryError."""
    text = value.strip()
    if text[:1] in ("{", "["):
        spec = _json_object("where", text, '{"state": "idle"}')
        _check_operators(spec)
        return spec
    try:
        spec = parse_python_where(text)
    except Exception:  # Eve's parser raises many kinds on odd input; all mean "not a query"
        raise QueryError('?where is neither a JSON object nor an expression such as state=="idle"') from None
    if not isinstance(spec, dict):
        raise QueryError('?where is neither a JSON object nor an expression such as state=="idle"')
    try:
        check_value(spec)  # a == 10**23, a == 1e999: Python syntax reaches values JSON cannot hold
    except ValueError as e:
        raise QueryError(f"?where {e}") from None
    # Eve does not sanitize this form: '"$where" == "..."' parses to {"$where": "..."}.
    _check_operators(spec)
    return spec


def _check_operators(spec):
    stack = [spec]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key, sub in item.items():
                if not key:
                    raise QueryError("?where has an empty field name")
                if key.startswith("$") and key not in ALLOWED_OPERATORS:
                    raise QueryError(f"?where may not use the operator {key}; "
                                     f"allowed: {', '.join(sorted(ALLOWED_OPERATORS))}")
                stack.append(sub)
        elif isinstance(item, list):
            stack.extend(item)


def check_sort(value):
    """Check a ?sort: "-state,hostname" or [("state", -1), ("hostname", 1)]. Raises QueryError."""
    text = value.strip()
    if text.startswith(("[", "(")):
        try:
            pairs = ast.literal_eval(text)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            raise QueryError('?sort must be like "-state,hostname" or [("state", -1)]') from None
        if not isinstance(pairs, (list, tuple)) or not all(
            isinstance(p, (list, tuple)) and len(p) == 2 and p[1] in (1, -1) and not isinstance(p[1], bool)
            for p in pairs
        ):
            raise QueryError("?sort must be a list of (field, 1 or -1) pairs")
        fields = [p[0] for p in pairs]
    else:
        fields = [f.strip().lstrip("-") for f in text.split(",")]
    for field in fields:
        if not isinstance(field, str) or not FIELD.match(field):
            raise QueryError(f"?sort: {field!r} is not a field name")


def check_projection(value):
    """Check a ?projection: a JSON object of field names to 0 or 1. Raises QueryError."""
    spec = _json_object("projection", value, '{"hostname": 1}')
    for field, flag in spec.items():
        if not FIELD.match(field):
            raise QueryError(f"?projection: {field!r} is not a field name")
        if flag not in (0, 1) or isinstance(flag, float):
            raise QueryError(f"?projection: {field!r} must map to 0 or 1")


def check_positive(name, value, upper):
    """Check that ?max_results or ?page is a whole number from 1 to `upper`. Raises QueryError."""
    if not (value.isascii() and value.isdigit()) or not 1 <= int(value) <= upper:
        raise QueryError(f"?{name} must be a whole number from 1 to {upper}, not {value!r}")


def check_args():
    """Answer 400 when an Eve endpoint gets a malformed query argument."""
    if eve_endpoint(request.endpoint) is None:  # only Eve's collection and item endpoints read these
        return None
    args = request.args
    if "version" in args:
        # Eve's document versions are off here; its item GET failed on ?version= (500).
        return error_response(400, "?version: this server keeps no document versions")
    try:
        # Empty ones Eve ignores, and so do we.
        if args.get("where"):
            check_where(args["where"])
        if args.get("sort"):
            check_sort(args["sort"])
        if args.get("projection"):
            check_projection(args["projection"])
        if "max_results" in args:
            # Above the limit Eve clamps, as documented; below 1 or not a number is an error.
            check_positive("max_results", args["max_results"], 10**9)
        if "page" in args:
            check_positive("page", args["page"], MAX_PAGE)
    except QueryError as e:
        return error_response(400, str(e))
    return None


def init_app(app):
    """Check query arguments before Eve parses them."""
    app.before_request(check_args)
