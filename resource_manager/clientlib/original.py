"""The original client's API (eucalyptus/DeploymentManager's client.py), kept for old scripts."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any, TextIO

from ..schema import META_FIELDS
from .base import ClientBase, Document

if TYPE_CHECKING:
    import requests

# The original client's columns per resource type, in its order (scripts read these).
FIELDS: dict[str, list[str]] = {"machines": ["hostname", "owner", "state", "job_id", "tags", "_updated", "_id"],
          "private-addresses": ["address", "owner", "tags", "_updated", "_id"],
          "public-addresses": ["address", "owner", "tags", "_updated", "_id"]}
# What the server sets on every write: dropped from a document sent back with put_resource().
SERVER_FIELDS = tuple(field for field in META_FIELDS if field != "_id")


class OriginalAPIMixin(ClientBase):
    """create_resource ... get_all_resources and print_resources; needs `get`, `request`, `write_item`, `list`."""

    FIELDS = FIELDS

    def print_resources(self, file: TextIO | None = None) -> None:
        """Print every item as a table of the original columns (`fields`)."""
        from prettytable import PrettyTable

        table = PrettyTable(self.fields)
        table.align = "l"
        for item in self.iter():
            table.add_row([cell(item.get(f)) for f in self.fields])
        print(table, file=file or sys.stdout)

    def create_resource(self, data: Document | str | bytes) -> Document:
        """Create an item from a dict or JSON string; return it with the _id and _etag the server gave it.

        Like the original, only the status counts: an answer without a JSON body adds nothing.
        """
        doc = as_dict(data)
        response = self.request("POST", f"/{self.resource_type}", json=doc)
        return merge(doc, _json_object_or_empty(response))

    def get_resource(self, name: object) -> Document:
        """Return the item by name (hostname/address) or _id. Raises NotFound."""
        return self.get(name)

    def update_resource(self, data: Document | str | bytes) -> Document:
        """PATCH the fields of `data` into the item its name field names (If-Match from a fresh read).

        PATCH merges `tags` into the stored ones; put_resource() replaces them. Returns the item
        as stored. Raises NotFound, ValidationError, PreconditionFailed (changed meanwhile).
        """
        changes = _without(as_dict(data), SERVER_FIELDS + ("_id",))
        name = self._name_of(changes)
        current = self.get(name)
        changes.pop(self.key)
        self.write_item("PATCH", self.item_path(current["_id"]), changes, current["_etag"])
        return self.get(name)

    def put_resource(self, data: Document | str | bytes) -> Document:
        """Replace the whole item (tags included) with `data`; return it as stored.

        `data` names the item by its name field, or by `_id` when it has one (a document read with
        get_resource() can be sent back as it is: _etag, _created, _updated and _links are dropped).
        If-Match comes from a fresh read. Raises NotFound, ValidationError, PreconditionFailed.
        """
        doc = _without(as_dict(data), SERVER_FIELDS)
        current = self.get(doc.get("_id") or self._name_of(doc))
        path = self.item_path(current["_id"])
        stored: Document = self.write_item("PUT", path, doc, current["_etag"]) or self.call("GET", path)
        return stored

    def delete_resource(self, data: Document | str | bytes) -> None:
        """Delete the item named in `data` (a dict or JSON string with the name field, or the name)."""
        name: object
        try:
            name = self._name_of(as_dict(data))
        except ValueError:
            name = data
        self.delete(name)

    def find_resources(self, field: str, value: Any) -> list[Document]:
        """Return the items whose `field` equals `value`, filtered by the server.

        An empty value ('' or None) also matches items without the field or with null there:
        the original tool wrote '' for "no owner", ours may leave it out.
        """
        if value in ("", None):
            return self.list(where={"$or": [{field: {"$exists": False}}, {field: None}, {field: ""}]})
        return self.list(where={field: value})

    def get_all_resources(self) -> list[Document]:
        """Return every item, across pages."""
        return self.list()

    def _name_of(self, data: Document) -> str:
        if not data.get(self.key):
            raise ValueError(f"the document must name the {self.resource_type[:-1]} by '{self.key}'")
        name: str = data[self.key]
        return name


def as_dict(data: Document | str | bytes) -> Document:
    """Return a document given as a dict or as a JSON string (what old scripts pass)."""
    if isinstance(data, (str, bytes)):
        data = json.loads(data)
    if not isinstance(data, dict):
        raise ValueError(f"expected a JSON object, not {type(data).__name__}")
    return data


def merge(doc: Document, meta: Document) -> Document:
    """Return the document sent, with what the server answered about it (_id, _etag...) but its links."""
    merged = dict(doc)
    merged.update({k: v for k, v in meta.items() if k not in ("_status", "_links")})
    return merged


def _without(doc: Document, fields: tuple[str, ...]) -> Document:
    return {k: v for k, v in doc.items() if k not in fields}


def _json_object_or_empty(response: requests.Response) -> Document:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def cell(value: Any) -> str:
    """Return a value as table text."""
    if value is None:
        return ""
    if isinstance(value, dict):
        return ", ".join(f"{k}={cell(v)}" for k, v in value.items())
    if isinstance(value, list):
        return ", ".join(cell(v) for v in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
