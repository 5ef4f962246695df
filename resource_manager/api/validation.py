"""Schema rules Eve's validator lacks: IP addresses in canonical form, storable key names."""

from cerberus.schema import DefinitionSchema, UnvalidatedSchema

from ..core.constraints import storable_keys
from ..schema import canonical_hostname, canonical_ip, parse_ip
from .eveglue import EveValidator


class Validator(EveValidator):
    """Eve's validator plus the `ip_address` rule and `canonical_ip` coercion."""

    @property
    def schema(self):
        """The validation schema (as Cerberus's own property)."""
        return self._schema

    @schema.setter
    def schema(self, schema):
        # Cerberus copies and checks the schema again for every document it normalises (it hashes
        # every rule): 5 ms a machine, four fifths of a 1,000-machine bulk POST. So the schema is
        # checked (and expanded) once, here, as Cerberus does, and kept as Cerberus's own
        # UnvalidatedSchema, whose copies are not checked again.
        if schema is None or self.is_child or isinstance(schema, DefinitionSchema):
            self._schema = schema
        else:
            self._schema = UnvalidatedSchema(DefinitionSchema(self, schema).schema)

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
        # Every `unique` field has a unique index (settings.NAME_FIELDS, db.py), which decides at
        # the write itself, atomically, on every engine, so nothing is queried here: Eve's rule was
        # a read-then-check that raced anyway, and a query of a bulk POST's names decodes the whole
        # collection on the embedded database. A single write that the index refuses answers 409;
        # a bulk POST stores all or nothing and names each taken or repeated value in its 422
        # (datalayer.py).

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
