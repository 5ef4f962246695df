"""Schema rules Eve's validator lacks: IP addresses in canonical form."""

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
