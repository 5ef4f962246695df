"""API tokens in the client: sending one (BearerAuth), and creating, listing and revoking them."""

import re
from urllib.parse import quote

import requests

from . import retry as client_retry
from .errors import NotFound

TOKEN_ID = re.compile(r"rm_([0-9a-f]{16})_")


def token_id(text):
    """Return the id part of a token (rm_<id>_<secret>), not secret; None when it has none."""
    match = TOKEN_ID.match(text or "")
    return match.group(1) if match else None


class BearerAuth(requests.auth.AuthBase):
    """Sends `Authorization: Bearer <token>`. Its repr names the token's id, never its secret."""

    def __init__(self, token):
        self.token = token

    def __call__(self, request):
        request.headers["Authorization"] = f"Bearer {self.token}"
        return request

    def __eq__(self, other):
        return isinstance(other, BearerAuth) and other.token == self.token

    def __repr__(self):
        return f"BearerAuth(token id {token_id(self.token) or '(not an rm_ token)'})"


class TokenMixin:
    """Create, list and revoke API tokens; needs `call` and `request`."""

    def create_token(self, scope, *, expires_in=None, expires=None, description=None, user=None):
        """Create a token; return its record with `token`, the secret, which no later answer shows.

        `expires_in` (seconds) or `expires` (an ISO 8601 date); neither: the server's default (90 days).
        `user`: for another user (admins only). Raises ValidationError, APIError (403).
        """
        body = {"scope": scope, "expires_in": expires_in, "expires": expires, "description": description,
                "user": user}
        return self.call("POST", "/tokens", json={k: v for k, v in body.items() if v is not None})

    def tokens(self, user=None):
        """Return your tokens (an admin: everyone's, or `user`'s), without secrets."""
        body = self.call("GET", "/tokens", params={"user": user} if user else None)
        return body.get("_items", [])

    def revoke_token(self, token):
        """Revoke a token, given its id or the token itself. Raises NotFound."""
        ident = token_id(token) or token
        try:
            self.request("DELETE", f"/tokens/{quote(ident, safe='')}")
        except NotFound as e:
            if not client_retry.replayed(e.response):  # a retry after a lost answer: it is gone, as asked
                raise
