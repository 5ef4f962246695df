"""Eve settings: one dict per resource, the unique keys behind them, and their one stored form."""

import ipaddress
import re
from typing import Any

MACHINE_STATES = ("pxe", "pxe_failed", "idle", "in_use", "needs_repair")
# A reservation is pending while its machines are being claimed (core/reserving.py), then active until it ends.
RESERVATION_STATES = ("pending", "queued", "active", "released", "expired", "cancelled", "timed_out")

# Item URLs accept an ObjectId or a name (hostname, address); see lookup.py.
NAME_URL = 'regex("[^/]+")'

tags_schema = {"type": "dict", "allow_unknown": True, "default": {}, "mongo_keys": True}

machines = {
    "item_url": NAME_URL,
    "schema": {
        "hostname": {
            "type": "string",
            "required": True,
            "empty": False,
            "maxlength": 253,
            # (?!\n): Python's "$" also matches before a final newline (Cerberus uses re.match);
            # not \Z, which /openapi.json's (ECMA) patterns lack. No empty label. The coercion
            # runs first and drops one trailing dot (the DNS root), so "h.example.com." is fine.
            "regex": r"^[A-Za-z0-9_][A-Za-z0-9_-]*(\.[A-Za-z0-9_-]+)*(?!\n)$",
            # One stored form per DNS name (lowercase, no trailing dot), so the unique index
            # refuses H.example.com beside h.example.com. Non-ASCII names are refused.
            "coerce": "canonical_hostname",
            "unique": True,
        },
        "owner": {"type": "string", "nullable": True, "maxlength": 256},
        "state": {"type": "string", "required": True, "allowed": list(MACHINE_STATES)},
        "job_id": {"type": "string", "nullable": True, "maxlength": 256},
        "tags": tags_schema,
        # Set by the allocator only: the reservation holding the machine (see core/claims.py).
        "reservation": {"type": "string", "nullable": True, "readonly": True},
    },
}


def address_resource(kind: str) -> dict[str, Any]:
    """Return the settings of the public or private address collection."""
    return {
        "item_url": NAME_URL,
        "url": f"{kind}-addresses",
        "item_title": f"{kind} address",
        "datasource": {"source": f"{kind}_addresses"},
        "schema": {
            "address": {
                "type": "string",
                "required": True,
                "ip_address": True,
                "coerce": "canonical_ip",
                "unique": True,
            },
            "owner": {"type": "string", "nullable": True, "maxlength": 256},
            "tags": tags_schema,
        },
    }


DOMAIN = {
    "machines": machines,
    "public-addresses": address_resource("public"),
    "private-addresses": address_resource("private"),
}

# The field that names an item, usable in item URLs in place of its _id. Each
# gets a unique index in the database: Eve's `unique` rule is read-then-check
# and races, the index does not.
NAME_FIELDS = {
    "machines": "hostname",
    "public-addresses": "address",
    "private-addresses": "address",
}

# The accounts' roles: readers read; operators and admins write (admins also manage accounts).
ROLES = ("reader", "operator", "admin")
WRITE_ROLES = ("operator", "admin")

# The fields Eve keeps beside an item's own (never part of what a user set, nor of a change).
META_FIELDS = ("_id", "_etag", "_created", "_updated", "_links", "_status", "_deleted", "_version",
               "_latest_version")

EVE_SETTINGS = {
    "RESOURCE_METHODS": ["GET", "POST"],
    "ITEM_METHODS": ["GET", "PATCH", "PUT", "DELETE"],
    # HEAD is GET without the body: open wherever GET is (it asked for credentials).
    "PUBLIC_METHODS": ["GET", "HEAD"],
    "PUBLIC_ITEM_METHODS": ["GET", "HEAD"],
    "ALLOWED_WRITE_ROLES": list(WRITE_ROLES),
    "ALLOWED_ITEM_WRITE_ROLES": list(WRITE_ROLES),
    "IF_MATCH": True,
    "ENFORCE_IF_MATCH": True,
    # A PUT never creates: items are found by name, and Eve's upsert needs an _id (it answered 500).
    "UPSERT_ON_PUT": False,
    "X_DOMAINS": None,
    "RENDERERS": ["eve.render.JSONRenderer"],
    "MONGO_QUERY_BLACKLIST": [
        "$where", "$regex", "$function", "$accumulator", "$expr", "$jsonSchema", "$text",
    ],
    "DATE_FORMAT": "%Y-%m-%dT%H:%M:%SZ",
    "STANDARD_ERRORS": [400, 401, 403, 404, 405, 406, 409, 410, 412, 413, 415, 422, 428, 429],
}


# The one stored form of a name: hostnames and IP addresses.
def parse_ip(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """Return the IPv4Address/IPv6Address of `value`. Raises ValueError, also for an IPv6 zone id.

    A zone (fe80::1%eth0) names an interface of the host that wrote it, not an address of
    ours: Python parses it into a distinct address, so the same address could be stored twice.
    """
    ip = ipaddress.ip_address(value)
    zone = getattr(ip, "scope_id", None)
    if zone is not None:
        raise ValueError(f"'{value}' has an IPv6 zone id ('%{zone}'): give the address without it")
    return ip


def canonical_ip(value: Any) -> Any:
    """Return the canonical text of an IPv4/IPv6 address, or the value unchanged."""
    try:
        return str(parse_ip(value.strip()))
    except (AttributeError, ValueError):
        return value


def canonical_hostname(value: Any) -> Any:
    """Return the one stored form of a DNS name: lowercase, without the root's trailing dot.

    Only ASCII names are canonicalised (and only ASCII names are accepted): lowercasing
    non-ASCII text can produce ASCII (KELVIN SIGN -> k), which would smuggle a new spelling in.
    """
    if not isinstance(value, str) or not value.isascii():
        return value
    value = value.lower()
    return value[:-1] if value.endswith(".") and len(value) > 1 else value


_DIGITS = re.compile(r"([0-9]+)")


def natural_key(text: str) -> tuple[Any, ...]:
    """Return the sort key that orders names as people read them: n2 before n10, 10.0.0.9 before 10.0.0.10.

    Runs of ASCII digits compare as numbers, the rest case-insensitively; the text itself breaks ties
    (n01 and n1, N1 and n1), so the order is total and the same everywhere (dashboard and CLI).
    """
    parts = _DIGITS.split(text)
    return tuple(int(part) if i % 2 else part.casefold() for i, part in enumerate(parts)) + (text,)


def sort_key(value: Any) -> tuple[Any, ...]:
    """Return a sort key for a field's value: None first, then text in natural order, then the rest."""
    if value is None:
        return (0, ())
    if isinstance(value, str):
        return (1, natural_key(value))
    return (2, value)
