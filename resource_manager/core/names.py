"""The one stored form of a name: hostnames and IP addresses (no Flask, no database)."""

import ipaddress


def parse_ip(value):
    """Return the IPv4Address/IPv6Address of `value`. Raises ValueError, also for an IPv6 zone id.

    A zone (fe80::1%eth0) names an interface of the host that wrote it, not an address of
    ours: Python parses it into a distinct address, so the same address could be stored twice.
    """
    ip = ipaddress.ip_address(value)
    if getattr(ip, "scope_id", None) is not None:
        raise ValueError(f"'{value}' has an IPv6 zone id ('%{ip.scope_id}'): give the address without it")
    return ip


def canonical_ip(value):
    """Return the canonical text of an IPv4/IPv6 address, or the value unchanged."""
    try:
        return str(parse_ip(value.strip()))
    except (AttributeError, ValueError):
        return value


def canonical_hostname(value):
    """Return the one stored form of a DNS name: lowercase, without the root's trailing dot.

    Only ASCII names are canonicalised (and only ASCII names are accepted): lowercasing
    non-ASCII text can produce ASCII (KELVIN SIGN -> k), which would smuggle a new spelling in.
    """
    if not isinstance(value, str) or not value.isascii():
        return value
    value = value.lower()
    return value[:-1] if value.endswith(".") and len(value) > 1 else value
