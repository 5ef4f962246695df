"""The users file: accounts of hashed passwords and roles, in one JSON file (rm-users edits it, the API reads it).

The file is ``{"users": {name: {"password": hash, "role": role, "uid": id}}}``, written atomically
and readable by its owner only. Password hashes are Werkzeug's format, made and checked here with
the standard library's scrypt: ``scrypt:32768:8:1$<salt>$<hex>`` (``pbkdf2:<hash>:<iterations>$...``,
written by older versions, is still checked). Standard library only: rm-users imports neither
Flask nor Eve (an import contract in pyproject.toml keeps it so).
"""

import functools
import hashlib
import hmac
import json
import logging
import os
import secrets
import string
import threading
import time

from ..schema import ROLES
from .jsontext import loads_strict

log = logging.getLogger(__name__)

SALT_CHARS = string.ascii_letters + string.digits
SALT_LENGTH = 16
SCRYPT = (2**15, 8, 1)  # n, r, p: Werkzeug's default


class UsersFileError(ValueError):
    """The users file cannot be read as accounts; the message says why."""


def hash_password(password):
    """Return a salted scrypt hash of `password`, in the format check_password (and Werkzeug) reads."""
    salt = "".join(secrets.choice(SALT_CHARS) for _ in range(SALT_LENGTH))
    n, r, p = SCRYPT
    return f"scrypt:{n}:{r}:{p}${salt}${_derive('scrypt', (n, r, p), salt, password)}"


def check_password(stored, password):
    """Return whether `password` matches the stored hash; False for a hash in no format we know."""
    try:
        method, salt, expected = stored.split("$", 2)
        name, *params = method.split(":")
        if name == "scrypt":
            args = tuple(map(int, params)) if params else SCRYPT
        elif name == "pbkdf2":
            args = (params[0] if params else "sha256", int(params[1]) if len(params) > 1 else 1_000_000)
        else:
            return False
        derived = _derive(name, args, salt, password)
    except (ValueError, TypeError, IndexError):
        return False
    return hmac.compare_digest(derived, expected)


def _derive(name, args, salt, password):
    if name == "scrypt":
        n, r, p = args
        return hashlib.scrypt(password.encode(), salt=salt.encode(), n=n, r=r, p=p, maxmem=132 * n * r * p).hex()
    digest, iterations = args
    return hashlib.pbkdf2_hmac(digest, password.encode(), salt.encode(), iterations).hex()


@functools.cache
def _dummy_hash():
    # Checked against when the user does not exist, so that a miss costs what a hit costs.
    return hash_password(secrets.token_hex(16))


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
    """Create or update an account in the users file. Raises ValueError for an unknown role."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    users = read_users(path) if os.path.exists(path) else {}
    record = {"password": hash_password(password), "role": role}
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


class UsersFile:
    """The accounts in a JSON users file, reloaded when the file changes.

    A file that cannot be read as accounts (a hand edit gone wrong, a partial copy, "users" as a
    list) never takes the accounts away: the last good ones keep serving, the problem is logged
    as an error once per version of the file and shown by status() (and so by /healthz).
    """

    def __init__(self, path, cache_seconds=300):
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

    def check_hash(self, stored, password):
        """Return whether `password` matches the stored hash (check_password; a subclass may watch it)."""
        return check_password(stored, password)

    def verify(self, username, password):
        """Return the user's record if the password is right, else None."""
        users = self._load()
        record = users.get(username)
        if record is None:
            self.check_hash(_dummy_hash(), password or "")
            return None
        digest = hmac.new(self._key, f"{username}\0{password}".encode(), hashlib.sha256).digest()
        cached = self._verified.get(username)
        # Bound to the stored hash: after a rotation the old password's entry matches nothing,
        # even one stored by a check that began before the new file was read.
        if (cached and cached[1] > time.monotonic() and cached[2] == record["password"]
                and hmac.compare_digest(cached[0], digest)):
            return record
        if not self.check_hash(record["password"], password or ""):
            return None
        self._verified[username] = (digest, time.monotonic() + self.cache_seconds, record["password"])
        return record
