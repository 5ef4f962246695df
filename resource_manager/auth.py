"""Accounts (a users file of hashed passwords and roles) and HTTP Basic auth."""

import hashlib
import hmac
import json
import logging
import os
import secrets
import threading
import time

from eve.auth import BasicAuth
from flask import abort, current_app, g, request
from werkzeug.security import check_password_hash, generate_password_hash

ROLES = ("reader", "operator", "admin")
WRITE_ROLES = ("operator", "admin")

log = logging.getLogger(__name__)

# Checked against when the user does not exist, so that a miss costs what a hit costs.
_DUMMY_HASH = generate_password_hash(secrets.token_hex(16))


class UsersFile:
    """The accounts in a JSON users file, reloaded when the file changes."""

    def __init__(self, path, cache_seconds=300):
        self.path = path
        self.cache_seconds = cache_seconds
        self._lock = threading.Lock()
        self._mtime = None
        self._users = {}
        # Verifying a scrypt hash costs tens of milliseconds: remember recent
        # successes by a keyed digest of the password, never the password.
        self._key = secrets.token_bytes(32)
        self._verified = {}

    def _load(self):
        if not self.path:
            return {}
        try:
            mtime = os.stat(self.path).st_mtime_ns
        except FileNotFoundError:
            return {}
        with self._lock:
            if mtime != self._mtime:
                self._users = read_users(self.path)
                self._mtime = mtime
                self._verified.clear()
            return self._users

    def get(self, username):
        """Return the stored record of an account, or None."""
        return self._load().get(username)

    def verify(self, username, password):
        """Return the user's record if the password is right, else None."""
        users = self._load()
        record = users.get(username)
        if record is None:
            check_password_hash(_DUMMY_HASH, password or "")
            return None
        digest = hmac.new(self._key, f"{username}\0{password}".encode(), hashlib.sha256).digest()
        cached = self._verified.get(username)
        if cached and cached[1] > time.monotonic() and hmac.compare_digest(cached[0], digest):
            return record
        if not check_password_hash(record["password"], password or ""):
            return None
        self._verified[username] = (digest, time.monotonic() + self.cache_seconds)
        return record


def read_users(path):
    """Return {username: {"password": hash, "role": role}} from a users file."""
    with open(path, encoding="utf-8") as fh:
        data = json.load(fh)
    return data.get("users", {})


def write_users(path, users):
    """Write the users file atomically, readable by its owner only."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump({"users": users}, fh, indent=2, sort_keys=True)
        fh.write("\n")
    os.replace(tmp, path)


def set_user(path, username, password, role):
    """Create or update an account in the users file."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    users = read_users(path) if os.path.exists(path) else {}
    users[username] = {"password": generate_password_hash(password), "role": role}
    write_users(path, users)


def remove_user(path, username):
    """Remove an account; return whether it existed."""
    users = read_users(path) if os.path.exists(path) else {}
    existed = users.pop(username, None) is not None
    write_users(path, users)
    return existed


class RoleAuth(BasicAuth):
    """HTTP Basic against the users file; 401 for bad credentials, 403 for a weak role."""

    def authorized(self, allowed_roles, resource, method):
        user = current_user()
        if user is None:
            return False
        self.set_user_or_token(user["username"])
        if allowed_roles and user["role"] not in allowed_roles:
            abort(403, description=(
                f"user '{user['username']}' has role '{user['role']}', "
                f"which may not {method} {resource or '/'}; needs one of: {', '.join(allowed_roles)}"
            ))
        return True

    def check_auth(self, username, password, allowed_roles, resource, method):
        return current_app.extensions["rm_users"].verify(username, password) is not None


def current_user():
    """Return {"username", "role"} of the request's valid credentials, or None."""
    if "rm_user" in g:
        return g.rm_user
    auth = request.authorization
    user = None
    if auth is not None and auth.type == "basic" and auth.username:
        record = current_app.extensions["rm_users"].verify(auth.username, auth.password)
        if record is not None:
            user = {"username": auth.username, "role": record.get("role", "reader")}
    g.rm_user = user
    return user


def require_role(*roles):
    """Abort 401 without valid credentials, 403 when the role is not among `roles`."""
    user = current_user()
    if user is None:
        abort(401, description="Please provide proper credentials (HTTP Basic)")
    if user["role"] not in roles:
        abort(403, description=(
            f"user '{user['username']}' has role '{user['role']}'; needs one of: {', '.join(roles)}"
        ))
    return user


def init_app(app):
    """Attach the users file named by USERS_FILE to the app."""
    path = app.config.get("USERS_FILE")
    if not path:
        log.warning("USERS_FILE is not set: every write will be refused (401)")
    app.extensions["rm_users"] = UsersFile(path, app.config.get("AUTH_CACHE_SECONDS", 300))
