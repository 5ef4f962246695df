"""API tokens in the client: sending one (BearerAuth), and creating, listing and revoking them."""

from __future__ import annotations

import re
from urllib.parse import quote

import requests

from . import retry as client_retry
from .base import ClientBase, Document
from .errors import NotFound

TOKEN_ID = re.compile(r"rm_([0-9a-f]{16})_")


def token_id(text: str | None) -> str | None:
    """Return the id part of a token (rm_<id>_<secret>), not secret; None when it has none."""
    match = TOKEN_ID.match(text or "")
    return match.group(1) if match else None


class BearerAuth(requests.auth.AuthBase):
    """Sends `Authorization: Bearer <token>`. Its repr names the token's id, never its secret."""

    def __init__(self, token: str) -> None:
        self.token = token

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self.token}"
        return request

    def __eq__(self, other: object) -> bool:
        return isinstance(other, BearerAuth) and other.token == self.token

    def __repr__(self) -> str:
        return f"BearerAuth(token id {token_id(self.token) or '(not an rm_ token)'})"


class TokenMixin(ClientBase):
    """Create, list and revoke API tokens; needs `call` and `request`."""

    def create_token(self, scope: str, *, expires_in: int | None = None, expires: str | None = None,
                     description: str | None = None, user: str | None = None) -> Document:
        """Create a token; return its record with `token`, the secret, which no later answer shows.

        `expires_in` (seconds) or `expires` (an ISO 8601 date); neither: the server's default (90 days).
        `user`: for another user (admins only). Raises ValidationError, APIError (403).
        """
        body = {"scope": scope, "expires_in": expires_in, "expires": expires, "description": description,
                "user": user}
        made: Document = self.call("POST", "/tokens", json={k: v for k, v in body.items() if v is not None})
        return made

    def tokens(self, user: str | None = None) -> list[Document]:
        """Return your tokens (an admin: everyone's, or `user`'s), without secrets."""
        body = self.call("GET", "/tokens", params={"user": user} if user else None)
        items: list[Document] = body.get("_items", [])
        return items

    def revoke_token(self, token: str) -> None:
        """Revoke a token, given its id or the token itself. Raises NotFound."""
        ident = token_id(token) or token
        try:
            self.request("DELETE", f"/tokens/{quote(ident, safe='')}")
        except NotFound as e:
            if not client_retry.replayed(e.response):  # a retry after a lost answer: it is gone, as asked
                raise
