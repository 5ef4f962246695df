"""The request bodies of our own routes (reservations, extensions, pools, allocations, tokens) and their rules."""

import json

from ..schema import canonical_hostname
from .ipranges import MAX_EXCLUDE
from .jsontext import check_value, loads_strict
from .tokens import MAX_DESCRIPTION, SCOPES

# Machine fields a reservation may be constrained on; tags.<name> are allowed too.
WHERE_FIELDS = ("hostname", "owner", "job_id")
# The safe operator set: no $where/$regex/$expr, nothing that runs code or scans text.
WHERE_OPERATORS = ("$in", "$gte", "$lte", "$gt", "$lt", "$exists")
MAX_LEASE_SECONDS = 7 * 86400  # the default of the server setting MAX_LEASE_SECONDS
MAX_HEARTBEAT_SECONDS = 86400
MIN_HEARTBEAT_SECONDS = 5
PRIORITY_DEFAULT, PRIORITY_MAX = 50, 100
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


# The JSON bodies of our own routes, as Cerberus schemas (plain dicts: core has no Cerberus).
# api/bodies.py validates with them and api/openapi.py documents them: a field is one line here.
# Beside Cerberus' rules: `default_setter: "user"` (the caller's user name), `max_setting` (a server
# setting that replaces `max`, or `maxlength` of a list), `nonblank` (a string with more than whitespace),
# `where` (check_where, which also gives the stored form), `mongo_keys` (storable_keys), and `meta`:
# `description` for the document, `hint` for the messages.
def _text(maxlength=MAX_TEXT, **rules):
    return {"type": "string", "nullable": True, "nonblank": True, "maxlength": maxlength, **rules}


def _count(setting, limit):
    return {"type": "integer", "min": 1, "max": limit, "max_setting": setting, "default": 1}


LEASE_SECONDS = {"type": "integer", "min": 1, "max": MAX_LEASE_SECONDS, "max_setting": "MAX_LEASE_SECONDS",
                 "nullable": True, "meta": {
                     "description": "the lease in seconds, from the grant; without it the server's default lease "
                                    "(DEFAULT_LEASE_SECONDS, 4 h): every reservation ends by itself"}}
HEARTBEAT_SECONDS = {"type": "integer", "min": MIN_HEARTBEAT_SECONDS, "max": MAX_HEARTBEAT_SECONDS,
                     "max_setting": "MAX_HEARTBEAT_SECONDS", "nullable": True, "meta": {
                         "description": "expect POST /reservations/<id>/heartbeat (or an extension) at least this "
                                        "often once granted; when none comes for this long the reservation ends by "
                                        "itself (expired). None: no heartbeats"}}
# (?!\n): Cerberus matches with re.match, and "$" also matches before a final newline.
EVENT_PATTERN = r"^(\*|[a-z_]+\.\*|[a-z_]+\.[a-z_]+)(?!\n)$"
POOL_NAME = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}(?!\n)$"
BODIES = {
    "reservation": {
        "count": _count("RESERVATION_MAX_COUNT", 1000),
        "owner": _text(default_setter="user", meta={"description": "defaults to the caller's user name"}),
        "job_id": _text(),
        "where": {"where": True, "nullable": True, "default": {}, "meta": {
            "description": "a filter on machines (or its JSON text): hostname, owner, job_id or tags.<name>, "
                           f"each a value or {{operator: value}} with the operators {', '.join(WHERE_OPERATORS)}; "
                           "e.g. {\"tags.memory\": {\"$gte\": 17179869184}}"}},
        "lease_seconds": LEASE_SECONDS,
        "heartbeat_seconds": HEARTBEAT_SECONDS,
        "priority": {"type": "integer", "min": 0, "max": PRIORITY_MAX, "nullable": True, "default": PRIORITY_DEFAULT,
                     "meta": {"description": "0 to 100 (default 50): the line is served by priority, then arrival; "
                                             "an operator may ask for up to 50, an admin for any"}},
        "reason": _text(1000),
        "wait_seconds": {"type": "integer", "min": 0, "max": 86400, "max_setting": "QUEUE_MAX_WAIT_SECONDS",
                         "nullable": True, "default": 0, "meta": {
                             "description": "if it cannot be met now, wait in the queue this long: 202 with the "
                                            "reservation `queued` instead of 409; 0: answer now"}},
    },
    "extension": {
        "lease_seconds": dict(LEASE_SECONDS, meta={"description": "the lease from now (never shortened, unless "
                                                                  "`exact`); left out: unchanged"}),
        "heartbeat_seconds": dict(HEARTBEAT_SECONDS, meta={"description": "a new heartbeat period (null: no more "
                                                                          "heartbeats); left out: unchanged"}),
        "exact": {"type": "boolean", "default": False, "meta": {
            "description": "end the lease exactly lease_seconds from now, even if that is earlier than it was"}},
        "reason": _text(1000),
    },
    "allocation": {
        "owner": _text(default_setter="user", meta={"description": "defaults to the caller's user name"}),
        "count": _count("ALLOCATION_MAX_COUNT", 1024),
        "tags": {"type": "dict", "allow_unknown": True, "mongo_keys": True, "nullable": True, "default": {},
                 "meta": {"description": "stored on each address; keys as for an address's tags"}},
        "reason": _text(1000),
    },
    "pool": {
        "name": {"type": "string", "required": True, "regex": POOL_NAME,
                 "meta": {"hint": "letters, digits, '_', '.', '-' (at most 128)"}},
        "cidr": {"type": "string", "required": True,
                 "meta": {"hint": "an IPv4 or IPv6 network such as 10.0.0.0/24"}},
        "kind": {"type": "string", "required": True, "allowed": ["public", "private"],
                 "meta": {"hint": "public or private"}},
        "exclude": {"type": "list", "schema": {"type": "string"}, "default": [], "maxlength": MAX_EXCLUDE,
                    "max_setting": "POOL_MAX_EXCLUDE", "meta": {
                        "description": "addresses, ranges a-b and CIDRs inside the pool (each counts as one entry); "
                                       "stored merged into ranges"}},
    },
    # Its dates (expires_in or expires, within TOKEN_MAX_DAYS) are checked by the route, which knows now.
    "token": {
        "scope": {"type": "string", "required": True, "allowed": list(SCOPES), "meta": {
            "hint": "one of " + ", ".join(SCOPES),
            "description": "at most what the user's role allows (reader: read, operator: write, admin: admin)"}},
        "expires_in": {"type": "integer", "min": 1, "nullable": True, "meta": {
            "description": "seconds from now (not with expires); default 90 days, at most TOKEN_MAX_DAYS (366)"}},
        "expires": {"type": "string", "maxlength": 40, "nullable": True, "meta": {
            "description": "when it expires, ISO 8601 such as 2027-01-31T00:00:00Z (not with expires_in)"}},
        "description": {"type": "string", "maxlength": MAX_DESCRIPTION, "nullable": True},
        "user": {"type": "string", "empty": False, "maxlength": 256, "nullable": True,
                 "meta": {"description": "the user it is for (admins only; default: you)"}},
    },
    # Its URL is checked against WEBHOOK_ALLOW and its `where` against the allowed operators by the route.
    "webhook": {
        "url": {"type": "string", "required": True, "nonblank": True, "maxlength": 2048, "meta": {
            "hint": "an http:// or https:// URL", "description": "where each event is POSTed; its host must be "
                                                              "allowed by the server's WEBHOOK_ALLOW"}},
        "events": {"type": "list", "required": True, "minlength": 1, "maxlength": 50, "schema": {
            "type": "string", "regex": EVENT_PATTERN}, "meta": {
                "description": "event types (machine.updated), kinds (reservation.*) or * for every event"}},
        "where": {"type": "dict", "nullable": True, "default": None, "meta": {
            "description": "only events matching this MongoDB filter on {type, data}, e.g. "
                           "{\"data.job_id\": \"build-42\"}; operators $eq $ne $gt $gte $lt $lte $in $nin $exists "
                           "$and $or $nor $not $all $size $elemMatch"}},
        "description": {"type": "string", "maxlength": MAX_DESCRIPTION, "nullable": True},
    },
}


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
