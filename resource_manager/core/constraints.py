"""Check request bodies of the allocation routes: reservations, extensions, pool allocations.

Each checker returns (clean_value, issues); issues is a {field: message} dict
that the routes answer with 422, so nothing changes on bad input.
"""

import json

from ..schema import canonical_hostname
from .jsontext import check_value, loads_strict

# Machine fields a reservation may be constrained on; tags.<name> are allowed too.
WHERE_FIELDS = ("hostname", "owner", "job_id")
# The safe operator set: no $where/$regex/$expr, nothing that runs code or scans text.
WHERE_OPERATORS = ("$in", "$gte", "$lte", "$gt", "$lt", "$exists")
MAX_LEASE_SECONDS = 366 * 86400
MAX_TEXT = 256
SCALARS = (str, int, float, bool, type(None))


def _is_scalar(value):
    return isinstance(value, SCALARS)


def check_where(where):
    """Return (filter, issue) for a reservation's `where`: a dict or its JSON text."""
    if where is None:
        return {}, None
    if isinstance(where, str):
        try:
            where = loads_strict(where) if where.strip() else {}
        except ValueError as e:
            return None, str(e)
    if not isinstance(where, dict):
        return None, "must be an object of field: condition"
    try:
        check_value(where)
    except ValueError as e:
        return None, str(e)
    for field, condition in where.items():
        if field == "state":
            return None, "'state' cannot be constrained: only idle machines are ever reserved"
        if field.startswith("$"):
            return None, f"operator '{field}' is not allowed at the top level; combine conditions by listing fields"
        if field not in WHERE_FIELDS and not _is_tag_path(field):
            allowed = ", ".join(WHERE_FIELDS)
            return None, f"field '{field}' cannot be constrained; use one of {allowed} or tags.<name>"
        issue = _check_condition(field, condition)
        if issue:
            return None, issue
    if "hostname" in where:  # names are stored canonical (lowercase, no trailing dot): compare so
        where = dict(where, hostname=_canonical_names(where["hostname"]))
    return where, None


def _canonical_names(condition):
    if isinstance(condition, dict):
        return {op: _canonical_names(value) for op, value in condition.items()}
    if isinstance(condition, list):
        return [canonical_hostname(v) for v in condition]
    return canonical_hostname(condition)


def _is_tag_path(field):
    parts = field.split(".")
    return len(parts) >= 2 and parts[0] == "tags" and all(p and not p.startswith("$") for p in parts[1:])


def _check_condition(field, condition):
    if _is_scalar(condition):
        return None
    if not isinstance(condition, dict) or not condition:
        return f"'{field}': a condition is a value or an object of operators ({', '.join(WHERE_OPERATORS)})"
    for op, value in condition.items():
        if op not in WHERE_OPERATORS:
            return f"'{field}': operator '{op}' is not allowed; use one of {', '.join(WHERE_OPERATORS)}"
        if op == "$in":
            if not isinstance(value, list) or not all(_is_scalar(v) for v in value):
                return f"'{field}': $in takes a list of values"
        elif op == "$exists":
            if not isinstance(value, bool):
                return f"'{field}': $exists takes true or false"
        elif not _is_scalar(value) or value is None or isinstance(value, bool):
            return f"'{field}': {op} takes a number or a string"
    return None


def check_int(body, field, issues, default=None, low=1, high=None, required=False):
    """Return body[field] as an int within [low, high], or record an issue."""
    value = body.get(field, default)
    if value is None:
        if required:
            issues[field] = "required field"
        return value
    if isinstance(value, bool) or not isinstance(value, int):
        issues[field] = "must be an integer"
    elif value < low:
        issues[field] = f"must be at least {low}"
    elif high is not None and value > high:
        issues[field] = f"must be at most {high}"
    return value


def check_text(body, field, issues, default=None, required=False, maxlength=MAX_TEXT):
    """Return body[field] as a non-empty string of bounded length, or record an issue."""
    value = body.get(field, default)
    if value is None:
        if required:
            issues[field] = "required field"
        return None
    if not isinstance(value, str) or not value.strip():
        issues[field] = "must be a non-empty string"
    elif len(value) > maxlength:
        issues[field] = f"must be at most {maxlength} characters"
    return value


def _unknown(body, allowed, issues):
    for field in body:
        if field not in allowed:
            issues[field] = "unknown field"


def check_reservation(body, user, max_count, max_wait=0):
    """Return (request, issues) for POST /reservations.

    `wait_seconds` (0 to `max_wait`, default 0: answer at once) is returned in the request too;
    the caller takes it out (it is how to answer, not what is reserved).
    """
    issues = {}
    _unknown(body, ("count", "owner", "job_id", "where", "lease_seconds", "reason", "wait_seconds"), issues)
    request = {
        # required: absent is the default, but an explicit null is an issue (it was a 500).
        "count": check_int(body, "count", issues, default=1, high=max_count, required=True),
        "owner": check_text(body, "owner", issues, default=user),
        "job_id": check_text(body, "job_id", issues),
        "lease_seconds": check_int(body, "lease_seconds", issues, high=MAX_LEASE_SECONDS),
        "reason": check_text(body, "reason", issues, maxlength=1000),
        "wait_seconds": check_int(body, "wait_seconds", issues, default=0, low=0, high=max_wait),
    }
    where, issue = check_where(body.get("where"))
    if issue:
        issues["where"] = issue
    request["where"] = where
    return request, issues


def check_extension(body):
    """Return (lease_seconds, issues) for POST /reservations/<id>/extend."""
    issues = {}
    _unknown(body, ("lease_seconds",), issues)
    return check_int(body, "lease_seconds", issues, high=MAX_LEASE_SECONDS, required=True), issues


def check_allocation(body, user, max_count):
    """Return (request, issues) for POST /address-pools/<name>/allocate."""
    issues = {}
    _unknown(body, ("owner", "count", "tags", "reason"), issues)
    request = {
        "owner": check_text(body, "owner", issues, default=user),
        # required: absent is the default, but an explicit null is an issue (it was a 500).
        "count": check_int(body, "count", issues, default=1, high=max_count, required=True),
        "reason": check_text(body, "reason", issues, maxlength=1000),
        "tags": body.get("tags") or {},
    }
    if not isinstance(request["tags"], dict):
        issues["tags"] = "must be an object"
    else:
        issue = storable_keys(request["tags"])
        if issue:
            issues["tags"] = issue
    return request, issues


def storable_keys(value):
    """Return why `value`'s keys cannot be stored and queried as tags.<key>, or None.

    The rule of the machines' and addresses' `tags` (validation.py): no empty key, none starting
    with '$' or holding '.' or NUL, and no array directly inside an array (the embedded database
    stores none).
    """
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key, sub in item.items():
                if not key or key.startswith("$") or "." in key or "\0" in key:
                    return f"key {key[:64]!r} may not be empty, start with '$' or contain '.'"
                stack.append(sub)
        elif isinstance(item, list):
            if any(isinstance(sub, list) for sub in item):
                return "an array may not hold arrays; use objects inside it"
            stack.extend(item)
    return None


def fingerprint(request):
    """Return a stable text of a request, to tell an honest retry from a reused Idempotency-Key."""
    return json.dumps(request, sort_keys=True, default=str)
