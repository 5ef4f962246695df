"""Accounts (a users file of hashed passwords and roles), HTTP Basic auth and Bearer tokens (tokens.py)."""

import hashlib
import hmac
import json
import logging
import os
import secrets
import threading
import time

from flask import abort, current_app, g, has_request_context, request
from werkzeug.security import check_password_hash, generate_password_hash

from ..core.tokens import ROLE_SCOPE
from ..schema import ROLES
from . import devices, ratelimit
from . import tokens as bearer
from .errors import error_response, loads_strict
from .intake import add_body_gate

log = logging.getLogger(__name__)

CREDENTIALS = "Please provide proper credentials (HTTP Basic or a Bearer token)"
CHALLENGES = f'Basic realm="resource_manager", {bearer.CHALLENGE}'

# Checked against when the user does not exist, so that a miss costs what a hit costs.
_DUMMY_HASH = generate_password_hash(secrets.token_hex(16))


class UsersFileError(ValueError):
    """The users file cannot be read as accounts; the message says why."""


class UsersFile:
    """The accounts in a JSON users file, reloaded when the file changes.

    A file that cannot be read as accounts (a hand edit gone wrong, a partial copy, "users" as a
    list) never takes the accounts away: the last good ones keep serving, the problem is logged
    as an error once per version of the file and shown by status() (and so by /healthz).
    """

    def __init__(self, path, cache_seconds=300, limiter=None):
        self.path = path
        self.cache_seconds = cache_seconds
        self._lock = threading.Lock()
        self._version = None
        self._users = {}
        self.loaded = None  # when the accounts in use were read (time.time()), or None
        self.problem = None  # {"error", "since"} while the file on disk is unusable
        # Verifying a scrypt hash costs tens of milliseconds: remember recent
        # successes by a keyed digest of the password, never the password.
        self._key = secrets.token_bytes(32)
        self._verified = {}
        self.limiter = limiter  # a ratelimit.FailureLimiter throttling failures inside requests, or None

    def _load(self):
        if not self.path:
            return {}
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return self._unusable(None, "the file does not exist")
        # The inode changes on every atomic replace (rm-users); mtime alone can repeat within a tick.
        version = (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)
        with self._lock:
            if version != self._version:
                self._version = version
                try:
                    self._users = read_users(self.path)
                except (OSError, UsersFileError) as e:
                    self._record_problem(str(e))
                else:
                    self.loaded = time.time()
                    if self.problem:
                        log.warning("users file %s is usable again: %d accounts", self.path, len(self._users))
                    self.problem = None
            return self._users

    def _unusable(self, version, reason):
        with self._lock:
            if version != self._version or self.problem is None:
                self._version = version
                self._record_problem(reason)
            return self._users

    def _record_problem(self, reason):
        # Lock held. Loud, once per version of the file: every request would otherwise repeat it.
        self.problem = {"error": reason, "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        log.error("users file %s is unusable (%s): %s", self.path, reason,
                  f"still serving the {len(self._users)} accounts read before" if self.loaded
                  else "no accounts: every write is refused")

    def status(self):
        """Return {"status": "ok"|"stale"|"none", ...} of the accounts in use, for /healthz."""
        users = self._load()
        if not self.path:
            return {"status": "none", "accounts": 0, "error": "no users file configured"}
        body = {"status": "stale" if self.problem else "ok", "accounts": len(users)}
        if self.problem:
            body.update(self.problem)
        return body

    def get(self, username):
        """Return the stored record of an account, or None."""
        return self._load().get(username)

    def verify(self, username, password):
        """Return the user's record if the password is right, else None.

        Inside a request, repeated failures are throttled (ratelimit.py), whoever asks: HTTP
        Basic, the dashboard's sign-in, any later caller. The key is the client's device token
        when it has a valid one for this account (devices.py: a neighbour's guesses cannot lock
        it out), else the username and client address. Raises an HTTPException answering 429
        with Retry-After while the key must wait.
        """
        if self.limiter is None or not has_request_context():
            return self._verify(username, password)
        key = devices.throttle_key(self, username)
        wait = self.limiter.begin(key)
        if wait:
            # Refused without checking the password: during the wait, guesses teach nothing.
            ratelimit.refuse(wait, f"logins for '{username[:64]}'")
        record = None
        try:
            record = self._verify(username, password)
        finally:
            self.limiter.end(key, record is not None)
        if record is not None:
            devices.remember(username, record)
        return record

    def _verify(self, username, password):
        users = self._load()
        record = users.get(username)
        if record is None:
            check_password_hash(_DUMMY_HASH, password or "")
            return None
        digest = hmac.new(self._key, f"{username}\0{password}".encode(), hashlib.sha256).digest()
        cached = self._verified.get(username)
        # Bound to the stored hash: after a rotation the old password's entry matches nothing,
        # even one stored by a check that began before the new file was read.
        if (cached and cached[1] > time.monotonic() and cached[2] == record["password"]
                and hmac.compare_digest(cached[0], digest)):
            return record
        if not check_password_hash(record["password"], password or ""):
            return None
        self._verified[username] = (digest, time.monotonic() + self.cache_seconds, record["password"])
        return record


def read_users(path):
    """Return {username: {"password": hash, "role": role}} from a users file.

    Raises UsersFileError when the file is not JSON or not accounts, OSError when unreadable.
    """
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    try:
        data = loads_strict(text)
    except ValueError as e:
        raise UsersFileError(f"it {e}") from None
    users = data.get("users") if isinstance(data, dict) else None
    if not isinstance(users, dict):
        raise UsersFileError('it must be a JSON object {"users": {name: {"password": hash, "role": role}}}')
    for name, record in users.items():
        if not name or not isinstance(record, dict) or not isinstance(record.get("password"), str) \
                or record.get("role", "reader") not in ROLES:
            raise UsersFileError(f"account {name[:64]!r} needs a password hash and a role ({', '.join(ROLES)})")
    return users


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
    record = {"password": generate_password_hash(password), "role": role}
    # An account's identity for its API tokens: a new account (even under a removed one's name)
    # gets a new one, so the tokens of the one removed stay dead; a password or role change keeps it.
    uid = users[username].get("uid") if username in users else secrets.token_hex(8)
    if uid:
        record["uid"] = uid
    users[username] = record
    write_users(path, users)


def remove_user(path, username):
    """Remove an account; return whether it existed."""
    users = read_users(path) if os.path.exists(path) else {}
    existed = users.pop(username, None) is not None
    write_users(path, users)
    return existed


def authorize_eve(allowed_roles, resource, method):
    """Decide a request to Eve's routes (eveglue.make_app): the user name, None without credentials (401).

    Aborts 403 when the account's role (a token: its scope) is not among `allowed_roles`.
    """
    user = current_user()
    if user is None:
        return None
    if allowed_roles and user["role"] not in allowed_roles:
        if user.get("token"):
            abort(403, description=f"{bearer.describe(user)}, which may not {method} {resource or '/'}")
        abort(403, description=(
            f"user '{user['username']}' has role '{user['role']}', "
            f"which may not {method} {resource or '/'}; needs one of: {', '.join(allowed_roles)}"
        ))
    return user["username"]


def current_user():
    """Return {"username", "role", "scope", "token"} of the request's valid credentials, or None.

    HTTP Basic, or a Bearer token (tokens.py); a token that does not authenticate aborts 401.
    `role` is what the request may do: for a token, the weaker of its scope and its user's role.
    """
    if "rm_user" in g:
        return g.rm_user
    users = current_app.extensions["rm_users"]
    token = bearer.presented()
    user = None
    if token is not None:
        user = bearer.authenticate(token, users)
    else:
        auth = request.authorization
        if auth is not None and auth.type == "basic" and auth.username:
            record = users.verify(auth.username, auth.password)
            if record is not None:
                role = record.get("role", "reader")
                user = {"username": auth.username, "role": role, "scope": ROLE_SCOPE.get(role, "read"),
                        "token": None}
    g.rm_user = user
    return user


def require_role(*roles):
    """Abort 401 without valid credentials, 403 when the role is not among `roles`."""
    user = current_user()
    if user is None:
        abort(401, description=CREDENTIALS)
    if user["role"] not in roles:
        if user.get("token"):
            abort(403, description=f"{bearer.describe(user)}; needs one of the roles: {', '.join(roles)}")
        abort(403, description=(
            f"user '{user['username']}' has role '{user['role']}'; needs one of: {', '.join(roles)}"
        ))
    return user


def init_app(app):
    """Attach the users file named by USERS_FILE to the app."""
    path = app.config.get("USERS_FILE")
    if not path:
        log.warning("USERS_FILE is not set: every write will be refused (401)")
    app.extensions["rm_users"] = UsersFile(path, app.config.get("AUTH_CACHE_SECONDS", 300),
                                           limiter=ratelimit.from_config(app.config))
    devices.init_app(app)
    add_body_gate(app, _authenticate_first)
    app.before_request(_check_token)


def _authenticate_first():
    # Every write of the API needs credentials (the dashboard has its own gate): check them, and a
    # token's scope, before the body is read, so that an anonymous slow body is refused at once.
    if request.blueprint == "web":
        return None
    user = current_user()
    if user is None:
        return error_response(401, CREDENTIALS, headers={"WWW-Authenticate": CHALLENGES})
    return bearer.refusal(user)


def _check_token():
    # Any other request presenting a token (reads and DELETEs too): a dead token is refused, not
    # taken for no credentials, and a token's scope holds.
    if request.blueprint == "web" or bearer.presented() is None:
        return None
    return bearer.refusal(current_user())
