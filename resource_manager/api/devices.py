"""Device tokens: a client that signed in before keeps its own bad-password allowance.

Without them, the throttle's key is (username, client address), and anyone sharing that
address (a NAT, a CI runner, everyone behind a proxy that hides client addresses) could
send a few wrong guesses and lock the real user out. So every successful login sets the
cookie `rm_device`: a random nonce and an HMAC of it keyed by the account's stored password
hash, which only the server knows. A login that presents a valid token for its account is
throttled under that token alone; guesses from others never touch it, and a thief of the
token is throttled on it like anyone else. A password change voids the account's tokens.
Clients that keep cookies (browsers, requests.Session, curl -b/-c) get this for free; the
others keep the (username, address) key.
"""

import hashlib
import hmac
import secrets

from flask import current_app, g, request

COOKIE = "rm_device"
MAX_AGE = 30 * 86400


def _mac(username, record, nonce):
    key = record["password"].encode()
    return hmac.new(key, f"device\0{username}\0{nonce}".encode(), hashlib.sha256).hexdigest()[:32]


def _valid_nonce(username, record):
    token = request.cookies.get(COOKIE, "")
    nonce, _, mac = token.partition(".")
    if record is None or not nonce or len(token) > 200 or not hmac.compare_digest(mac, _mac(username, record, nonce)):
        return None
    return nonce


def throttle_key(users, username):
    """Return the failure-count key of this login attempt: (username, where it comes from)."""
    nonce = _valid_nonce(username, users.get(username)) if COOKIE in request.cookies else None
    if nonce:
        g.rm_device_known = True
        return (username, "device:" + hashlib.sha256(nonce.encode()).hexdigest()[:12])
    return (username, request.remote_addr or "")


def remember(username, record):
    """After a successful login without a valid token, give the client one (set after the request)."""
    if not g.get("rm_device_known"):
        nonce = secrets.token_urlsafe(16)
        g.rm_device_cookie = f"{nonce}.{_mac(username, record, nonce)}"


def _set_cookie(response):
    token = g.pop("rm_device_cookie", None)
    if token:
        response.set_cookie(COOKIE, token, max_age=MAX_AGE, httponly=True, samesite="Strict",
                            secure=bool(current_app.config.get("SESSION_COOKIE_SECURE")))
    return response


def init_app(app):
    """Hand out device tokens after successful logins."""
    app.after_request(_set_cookie)
