"""Who is asking: accounts of the users file (core/users.py), HTTP Basic, Bearer tokens (tokens.py), roles."""

import logging

from flask import abort, current_app, g, has_request_context, request

from ..core import users as store
from ..core.tokens import ROLE_SCOPE
from . import devices, ratelimit
from . import tokens as bearer
from .errors import error_response
from .intake import add_body_gate

log = logging.getLogger(__name__)

CREDENTIALS = "Please provide proper credentials (HTTP Basic or a Bearer token)"
CHALLENGES = f'Basic realm="resource_manager", {bearer.CHALLENGE}'
# The users file's store (UsersFile, read_users, set_user...) is core/users.py, still importable from here.
UsersFile, UsersFileError = store.UsersFile, store.UsersFileError
read_users, write_users, set_user, remove_user = store.read_users, store.write_users, store.set_user, store.remove_user
# Every password check of the API goes through this name, looked up when called (a test steps in here).
check_password_hash = store.check_password


class Accounts(UsersFile):
    """The users file (core/users.py) as the API uses it: password checks inside requests are throttled."""

    def __init__(self, path, cache_seconds=300, limiter=None):
        super().__init__(path, cache_seconds)
        self.limiter = limiter  # a ratelimit.FailureLimiter throttling failures inside requests, or None

    def check_hash(self, stored, password):
        return check_password_hash(stored, password)

    def verify(self, username, password):
        """Return the user's record if the password is right, else None.

        Inside a request, repeated failures are throttled (ratelimit.py), whoever asks: HTTP
        Basic, the dashboard's sign-in, any later caller. The key is the client's device token
        when it has a valid one for this account (devices.py: a neighbour's guesses cannot lock
        it out), else the username and client address. Raises an HTTPException answering 429
        with Retry-After while the key must wait.
        """
        if self.limiter is None or not has_request_context():
            return super().verify(username, password)
        key = devices.throttle_key(self, username)
        wait = self.limiter.begin(key)
        if wait:
            # Refused without checking the password: during the wait, guesses teach nothing.
            ratelimit.refuse(wait, f"logins for '{username[:64]}'")
        record = None
        try:
            record = super().verify(username, password)
        finally:
            self.limiter.end(key, record is not None)
        if record is not None:
            devices.remember(username, record)
        return record


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
    app.extensions["rm_users"] = Accounts(path, app.config.get("AUTH_CACHE_SECONDS", 300),
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
