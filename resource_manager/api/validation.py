"""Schema rules Eve's validator lacks: IP addresses in canonical form, storable key names."""

import pymongo.errors
from flask import current_app, g, has_request_context, request

from ..core.constraints import storable_keys
from ..schema import canonical_hostname, canonical_ip, parse_ip
from .errors import database_unavailable
from .eveglue import EveValidator


def _bulk_values(field):
    # The field's values in this request's body when it is a bulk POST, else None.
    if not has_request_context() or request.method != "POST":
        return None
    if "rm_unique_values" not in g:
        body = request.get_json(silent=True)
        g.rm_unique_values = {} if isinstance(body, list) and len(body) > 1 else None
        g.rm_unique_seen, g.rm_unique_taken, g.rm_body = {}, {}, body
    if g.rm_unique_values is None:
        return None
    if field not in g.rm_unique_values:
        values = {doc.get(field) for doc in g.rm_body if isinstance(doc, dict)} - {None}
        values |= {canonical_ip(v) for v in values if isinstance(v, str)}
        values |= {canonical_hostname(v) for v in values if isinstance(v, str)}
        g.rm_unique_values[field] = sorted(values, key=str)
    return g.rm_unique_values[field]


def _taken(resource, field, values):
    if field not in g.rm_unique_taken:
        datasource = current_app.data.datasource(resource)[0]
        found = current_app.data.driver.db[datasource].find({field: {"$in": values}}, {field: 1})
        g.rm_unique_taken[field] = {doc.get(field) for doc in found}
    return g.rm_unique_taken[field]


class Validator(EveValidator):
    """Eve's validator plus the `ip_address` rule and `canonical_ip` coercion."""

    def _check_unique(self, unique, field, value):
        # Every `unique` field has a unique index (settings.NAME_FIELDS, db.py), which decides at
        # the write itself, atomically, on every engine: a single POST, PUT or PATCH is not
        # queried first (Eve's rule was a read-then-check that raced anyway); the 409 comes from
        # the index (datalayer.py). A bulk POST is checked first, with one query for the whole
        # batch, so that a taken or repeated name stores none of it (an ordered insert would
        # have stored the documents before it) and each bad document is named in its _issues.
        batch = _bulk_values(field) if unique and not self.document_path else None
        if batch is None:
            return None
        if value in _taken(self.resource, field, batch):
            self._error(field, f"value '{value}' is not unique")
        elif value in g.rm_unique_seen.setdefault(field, set()):
            self._error(field, f"value '{value}' is not unique (twice in this request)")
        else:
            g.rm_unique_seen[field].add(value)

    def _validate_ip_address(self, ip_address, field, value):
        """{'type': 'boolean'}"""
        if not ip_address:
            return
        if "%" in value:
            self._error(field, f"'{value}' has an IPv6 zone id ('%...'): give the address without it")
            return
        try:
            parse_ip(value)
        except ValueError:
            self._error(field, f"'{value}' is not a valid IPv4 or IPv6 address")

    def _validate_unique(self, unique, field, value):
        """{'type': 'boolean'}"""
        try:
            self._check_unique(unique, field, value)
        except pymongo.errors.PyMongoError as e:
            # Eve reports any exception in validation as a 422; the request must answer 503.
            if database_unavailable(e):
                g.rm_database_error = e
            raise

    def _normalize_coerce_canonical_ip(self, value):
        return canonical_ip(value)

    def _normalize_coerce_canonical_hostname(self, value):
        return canonical_hostname(value)

    def _validate_mongo_keys(self, mongo_keys, field, value):
        """{'type': 'boolean'}"""
        if not mongo_keys:
            return
        # The database refuses "$..." keys, and a dotted key cannot be queried as tags.<key>.
        issue = storable_keys(value)
        if issue:
            self._error(field, issue)
