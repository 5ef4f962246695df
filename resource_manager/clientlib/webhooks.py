"""Webhooks in the client: register, list and delete hooks, read their delivery log, redeliver (admins)."""

from urllib.parse import quote


def _segment(text):
    return quote(str(text), safe="")


class WebhookMixin:
    """Webhook calls; needs `call` and `request`."""

    def create_webhook(self, url, events, *, where=None, description=None):
        """Register a hook for these event types (or kind.*, or *); return it with its `secret`, shown once.

        Raises ValidationError (the URL is not allowed, a bad type or `where`), APIError (403: not an admin).
        """
        body = {"url": url, "events": list(events), "where": where, "description": description}
        return self.call("POST", "/webhooks", json={k: v for k, v in body.items() if v is not None})

    def webhooks(self):
        """Return the hooks, without their secrets."""
        return self.call("GET", "/webhooks").get("_items", [])

    def delete_webhook(self, hook_id):
        """Delete a hook and its delivery log. Raises NotFound."""
        self.request("DELETE", f"/webhooks/{_segment(hook_id)}")

    def webhook_deliveries(self, hook_id, state=None, limit=None):
        """Return a hook's deliveries, newest event first (`state`: pending, delivering, delivered, failed)."""
        params = {k: v for k, v in (("state", state), ("max_results", limit)) if v is not None}
        return self.call("GET", f"/webhooks/{_segment(hook_id)}/deliveries", params=params or None).get("_items", [])

    def redeliver(self, hook_id, delivery_id):
        """Send a delivery again, with a fresh count of attempts; return it. Raises NotFound, Conflict."""
        return self.call("POST", f"/webhooks/{_segment(hook_id)}/deliveries/{_segment(delivery_id)}/redeliver")
