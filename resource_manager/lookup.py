"""Item URLs by name: /machines/<hostname>, /public-addresses/<address>, or by _id."""

from bson import ObjectId

from .settings import NAME_FIELDS
from .validation import canonical_ip


def name_filter(resource, value):
    """Return the filter that finds an item of `resource` by _id or by name."""
    if ObjectId.is_valid(value):
        return {"_id": value}
    field = NAME_FIELDS[resource]
    if field == "address":
        value = canonical_ip(value)
    return {field: value}


def _rewrite(resource, request, lookup):
    if resource not in NAME_FIELDS or "_id" not in lookup:
        return
    value = lookup.pop("_id")
    lookup.update(name_filter(resource, str(value)))


def init_app(app):
    """Let every item method find its item by name as well as by _id."""
    for method in ("GET", "PATCH", "PUT", "DELETE"):
        hook = getattr(app, f"on_pre_{method}")
        hook += _rewrite
