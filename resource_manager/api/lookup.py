"""Item URLs by name: /machines/<hostname>, /public-addresses/<address>, or by _id.

The rule, for the last segment of an item URL:
- anything but 24 hex digits is a name, in any spelling that canonicalises to it
  (H.Example.COM. finds h.example.com; 2001:DB8::0:1 finds 2001:db8::1);
- 24 hex digits name the item whose _id it is or whose name it is. When one item has that
  _id and another that name, the URL is ambiguous and answers 409 naming both, so that a
  hostname that looks like an ObjectId never reaches another machine (and an _id URL
  never reaches the machine named after it).
"""

from bson import ObjectId
from flask import abort, current_app

from ..schema import NAME_FIELDS, canonical_hostname, canonical_ip
from .db import collection_name, database
from .eveglue import on


def canonical_name(resource, value):
    """Return the stored form of the name `value` of an item of `resource`."""
    if NAME_FIELDS[resource] == "address":
        return canonical_ip(value)
    return canonical_hostname(value)


def name_filter(resource, value):
    """Return the filter that finds an item of `resource` by _id or by name (see the module's rule).

    Raises an HTTPException answering 409 when `value` is one item's _id and another's name.
    """
    if "\0" in value:  # nothing stored holds one (PostgreSQL's jsonb cannot), and it must not reach a query
        abort(404)
    field = NAME_FIELDS[resource]
    name = canonical_name(resource, value)
    collection = database()[collection_name(current_app, resource)]
    if not ObjectId.is_valid(value):
        if name != value and collection.find_one({field: name}, {"_id": 1}) is None:
            # Stored before names were canonicalised (say H.example.com): still found by its spelling.
            return {field: value}
        return {field: name}
    oid = ObjectId(value)
    # Two equality lookups, not one $or: the embedded database pushes equality down to an index,
    # while an $or reads every item.
    found = [d for d in (collection.find_one({"_id": oid}, {field: 1}), collection.find_one({field: name}, {field: 1}))
             if d is not None]
    found = list({d["_id"]: d for d in found}.values())
    if len(found) > 1:
        named = next(d for d in found if d["_id"] != oid)
        abort(409, description=(
            f"'{value}' is ambiguous: it is the _id of one item and the {field} of another "
            f"(_id {named['_id']}); use that _id to reach the item named '{name}'"))
    return {"_id": found[0]["_id"] if found else oid}


def _rewrite(resource, request, lookup):
    if resource not in NAME_FIELDS or "_id" not in lookup:
        return
    value = lookup.pop("_id")
    lookup.update(name_filter(resource, str(value)))


def init_app(app):
    """Let every item method find its item by name as well as by _id."""
    for method in ("GET", "PATCH", "PUT", "DELETE"):
        on(app, f"pre_{method}", _rewrite)
