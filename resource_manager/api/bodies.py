"""Validate the JSON bodies of our own routes with their Cerberus schemas (core/constraints.BODIES)."""

import copy

import cerberus
from cerberus import errors
from flask import current_app

from ..core.constraints import BODIES, check_where, storable_keys

# Keys of ours in BODIES that Cerberus must not see: defaults are filled in here (Cerberus would also
# put them in place of an explicit null, and a null count is an issue), settings resolved here.
_OURS = ("default", "default_setter", "max_setting")
_TYPE_NAMES = {"integer": "an integer", "string": "a string", "dict": "an object", "list": "an array",
               "boolean": "true or false", "number": "a number"}


class Issues(errors.BasicErrorHandler):
    """Cerberus' errors as one message per field, worded as our other 422s are."""

    messages = dict(errors.BasicErrorHandler.messages)
    messages.update({
        errors.NOT_NULLABLE.code: "may not be null",
        errors.EMPTY_NOT_ALLOWED.code: "must be a non-empty string",
        errors.MIN_VALUE.code: "must be at least {constraint}",
        errors.MAX_VALUE.code: "must be at most {constraint}",
    })

    def __init__(self, tree=None, schema=None):
        super().__init__(tree)
        self.schema = schema or {}

    def _format_message(self, field, error):
        rule = self.schema.get(error.document_path[0], {}) if len(error.document_path) == 1 else {}
        hint = (rule.get("meta") or {}).get("hint")
        if error.code == errors.BAD_TYPE.code:
            wanted = error.constraint if isinstance(error.constraint, list) else [error.constraint]
            return f"must be {hint}" if hint else "must be " + " or ".join(_TYPE_NAMES.get(t, t) for t in wanted)
        if error.code == errors.REGEX_MISMATCH.code and hint:
            return f"must be {hint}"
        if error.code == errors.UNALLOWED_VALUE.code:
            return "must be " + " or ".join(map(str, error.constraint))
        if error.code in (errors.MIN_LENGTH.code, errors.MAX_LENGTH.code):
            verb, unit = ("have", "entries") if isinstance(error.value, list) else ("be", "characters")
            bound = "least" if error.code == errors.MIN_LENGTH.code else "most"
            return f"must {verb} at {bound} {error.constraint} {unit}"
        if error.code == errors.REQUIRED_FIELD.code and hint:
            return f"required: {hint}"
        return super()._format_message(field, error)


class BodyValidator(cerberus.Validator):
    """Cerberus with the rules of BODIES: nonblank, where, mongo_keys (`meta` is Cerberus' own)."""

    types_mapping = dict(cerberus.Validator.types_mapping)
    # JSON true is not a count: bool is an int in Python.
    types_mapping["integer"] = cerberus.TypeDefinition("integer", (int,), (bool,))

    def _validate_nonblank(self, nonblank, field, value):
        """{'type': 'boolean'}"""
        if nonblank and isinstance(value, str) and not value.strip():
            self._error(field, "must be a non-empty string")

    def _validate_where(self, where, field, value):
        """{'type': 'boolean'}"""
        if where:
            issue = check_where(value)[1]
            if issue:
                self._error(field, issue)

    def _validate_mongo_keys(self, mongo_keys, field, value):
        """{'type': 'boolean'}"""
        issue = storable_keys(value) if mongo_keys else None
        if issue:
            self._error(field, issue)


def settled_schema(name, config):
    """Return BODIES[name] as Cerberus takes it: our keys out, `max_setting` read from `config`."""
    schema = {}
    for field, rule in BODIES[name].items():
        rule = copy.deepcopy(rule)
        setting = rule.get("max_setting")
        if setting and config.get(setting) is not None:
            rule["maxlength" if rule.get("type") == "list" else "max"] = int(config[setting])
        schema[field] = {k: v for k, v in rule.items() if k not in _OURS}
    return schema


def _flat(messages):
    # Cerberus lists the errors of a field (and nests those of its items): one line per field, as before.
    parts = []
    for message in messages:
        if isinstance(message, dict):
            parts += [f"{key}: {_flat(sub)}" for key, sub in message.items()]
        else:
            parts.append(str(message))
    return "; ".join(parts)


def validate(name, body, user=None):
    """Return (document, issues) of a JSON object body; the document has its defaults filled in.

    issues is {field: message}, empty when the body is valid (routes answer 422 otherwise).
    """
    doc = dict(body)
    for field, rule in BODIES[name].items():
        if field not in doc:
            if rule.get("default_setter") == "user":
                doc[field] = user
            elif "default" in rule:
                doc[field] = copy.deepcopy(rule["default"])
            elif not rule.get("required"):
                doc[field] = None
        elif doc[field] is None and rule.get("nullable") and "default" in rule:
            doc[field] = copy.deepcopy(rule["default"])
    schema = settled_schema(name, current_app.config)
    validator = BodyValidator(schema, error_handler=(Issues, {"schema": schema}))
    if not validator.validate(doc, normalize=False):
        return doc, {field: _flat(messages) for field, messages in validator.errors.items()}
    if (BODIES[name].get("where") or {}).get("where"):  # a reservation's: its stored form
        doc["where"] = check_where(doc["where"])[0]
    return doc, {}
