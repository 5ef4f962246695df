"""Webhooks in the client: register, list and delete hooks, read their delivery log, redeliver (admins)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote

from .base import ClientBase, Document


def _segment(text: object) -> str:
    return quote(str(text), safe="")


class WebhookMixin(ClientBase):
    """Webhook calls; needs `call` and `request`."""

    def create_webhook(self, url: str, events: Iterable[str], *, where: Mapping[str, Any] | None = None,
                       description: str | None = None) -> Document:
        """Register a hook for these event types (or kind.*, or *); return it with its `secret`, shown once.

        Raises ValidationError (the URL is not allowed, a bad type or `where`), Forbidden (not an admin).
        """
        body = {"url": url, "events": list(events), "where": where, "description": description}
        made: Document = self.call("POST", "/webhooks", json={k: v for k, v in body.items() if v is not None})
        return made

    def webhooks(self) -> list[Document]:
        """Return the hooks, without their secrets."""
        items: list[Document] = self.call("GET", "/webhooks").get("_items", [])
        return items

    def delete_webhook(self, hook_id: str) -> None:
        """Delete a hook and its delivery log. Raises NotFound."""
        self.request("DELETE", f"/webhooks/{_segment(hook_id)}")

    def webhook_deliveries(self, hook_id: str, state: str | None = None, limit: int | None = None) -> list[Document]:
        """Return a hook's deliveries, newest event first (`state`: pending, delivering, delivered, failed)."""
        params = {k: v for k, v in (("state", state), ("max_results", limit)) if v is not None}
        items: list[Document] = self.call("GET", f"/webhooks/{_segment(hook_id)}/deliveries",
                                          params=params or None).get("_items", [])
        return items

    def redeliver(self, hook_id: str, delivery_id: str) -> Document:
        """Send a delivery again, with a fresh count of attempts; return it. Raises NotFound, Conflict."""
        again: Document = self.call("POST", f"/webhooks/{_segment(hook_id)}/deliveries/{_segment(delivery_id)}"
                                            "/redeliver")
        return again
