"""Schema rules Eve's validator lacks: IP addresses in canonical form, storable key names."""

import ipaddress

import pymongo.errors
from eve.io.mongo import Validator as EveValidator
from flask import g


def canonical_ip(value):
    """Return the canonical text of an IPv4/IPv6 address, or the value unchanged."""
    try:
        return str(ipaddress.ip_address(value.strip()))
    except (AttributeError, ValueError):
        return value


class Validator(EveValidator):
    """Eve's validator plus the `ip_address` rule and `canonical_ip` coercion."""

    def _validate_ip_address(self, ip_address, field, value):
        """{'type': 'boolean'}"""
        if not ip_address:
            return
        try:
            ipaddress.ip_address(value)
        except ValueError:
            self._error(field, f"'{value}' is not a valid IPv4 or IPv6 address")

    def _validate_unique(self, unique, field, value):
        """{'type': 'boolean'}"""
        try:
            super()._validate_unique(unique, field, value)
        except pymongo.errors.ConnectionFailure as e:
            # Eve reports any exception in validation as a 422; the request must answer 503.
            g.rm_database_error = e
            raise

    def _normalize_coerce_canonical_ip(self, value):
        return canonical_ip(value)

    def _validate_mongo_keys(self, mongo_keys, field, value):
        """{'type': 'boolean'}"""
        if not mongo_keys:
            return
        # The database refuses "$..." keys, and a dotted key cannot be queried as tags.<key>.
        stack = [value]
        while stack:
            item = stack.pop()
            if isinstance(item, dict):
                for key, sub in item.items():
                    if not key or key.startswith("$") or "." in key or "\0" in key:
                        self._error(field, f"key {key!r} may not be empty, start with '$' or contain '.'")
                        return
                    stack.append(sub)
            elif isinstance(item, list):
                stack.extend(item)
