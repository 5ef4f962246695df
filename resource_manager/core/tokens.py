"""API tokens: the stored records (a SHA-256 of the secret, never the secret), scopes, lookup by id.

A token reads `rm_<id>_<secret>`: `rm_` makes a leaked one recognisable (secret scanners, logs),
`<id>` (16 hex digits, not secret) is the record's `_id`, so finding it is one equality lookup on
`_id` (no scan on any engine), and `<secret>` is 32 random bytes (43 base64url characters).

Only SHA-256 of the whole token is stored, compared in constant time. A slow password hash
(bcrypt, scrypt) protects low-entropy passwords from offline guessing; against 256 random bits
guessing is hopeless whatever the hash, and a slow hash would cost every request tens of
milliseconds of CPU (the reason the users file keeps a cache of verified passwords). So, as
GitHub and NetBox do, a fast unsalted hash: a copy of the database yields no usable token.
"""

import datetime
import hashlib
import hmac
import re
import secrets

from .clock import utcnow
from .dates import aware

COLLECTION = "api_tokens"
PREFIX = "rm_"
TOKEN = re.compile(r"rm_([0-9a-f]{16})_([A-Za-z0-9_-]{43})")
ID = re.compile(r"[0-9a-f]{16}")

# Scopes, weakest first. A token never does more than its scope, nor more than its user's role.
SCOPES = ("read", "reserve", "write", "admin")
# The most a role's token may do (and what a scope leaves of a role: the weaker of the two).
ROLE_SCOPE = {"reader": "read", "operator": "write", "admin": "admin"}
SCOPE_ROLE = {"read": "reader", "reserve": "operator", "write": "operator", "admin": "admin"}

# last_used is written at most this often per token (by any process): a token used by a busy CI
# job does not turn every request into a write.
LAST_USED_EVERY = datetime.timedelta(seconds=60)
MAX_DESCRIPTION = 200
PUBLIC_FIELDS = ("_id", "user", "scope", "description", "created", "created_by", "expires", "last_used")


def weaker(scope_a, scope_b):
    """Return the weaker of two scopes."""
    return min(scope_a, scope_b, key=SCOPES.index)


def effective_scope(scope, role):
    """Return what a token of `scope` may do for a user of `role` now (a demoted user's token shrinks)."""
    return weaker(scope, ROLE_SCOPE.get(role, "read"))


def digest(token):
    """Return the stored form of a token: the hex SHA-256 of its text."""
    return hashlib.sha256(token.encode()).hexdigest()


def parse(text):
    """Return the id of a well-formed token, else None."""
    match = TOKEN.fullmatch(text or "")
    return match.group(1) if match else None


def create(db, user, uid, scope, expires, description, created_by):
    """Store a new token; return (record, token text). The text exists only in this answer."""
    now = utcnow()
    for _attempt in range(5):
        token_id = secrets.token_hex(8)
        token = f"{PREFIX}{token_id}_{secrets.token_urlsafe(32)}"
        record = {"_id": token_id, "hash": digest(token), "user": user, "uid": uid, "scope": scope,
                  "description": description, "created": now, "created_by": created_by, "expires": expires,
                  "last_used": None}
        if db[COLLECTION].find_one({"_id": token_id}, {"_id": 1}) is None:
            db[COLLECTION].insert_one(record)  # a collision past the check: E11000, never an overwrite
            return record, token
    raise RuntimeError("no free token id after 5 tries")  # 2^64 ids: never happens


def lookup(db, token):
    """Return the record a token's id names, or None (also for a malformed token). Says nothing of its secret."""
    token_id = parse(token)
    return None if token_id is None else db[COLLECTION].find_one({"_id": token_id})


def matches(record, token):
    """Whether `token` is the one `record` was made for (constant time)."""
    return hmac.compare_digest(record["hash"], digest(token))


def expired(record, now=None):
    """Whether the token's expiry has passed."""
    expires = record.get("expires")
    return expires is not None and aware(expires) <= (now or utcnow())


def touch(db, record, now=None):
    """Record a use, at most once per LAST_USED_EVERY per token (whoever asks); return whether it wrote."""
    now = now or utcnow()
    last = record.get("last_used")
    if last is not None and now - aware(last) < LAST_USED_EVERY:
        return False
    # Conditional on the value read: of several processes noticing at once, one writes.
    result = db[COLLECTION].update_one({"_id": record["_id"], "last_used": last}, {"$set": {"last_used": now}})
    return result.modified_count == 1


def listing(db, user=None):
    """Return the records of one user's tokens (or everyone's), oldest first."""
    query = {} if user is None else {"user": user}
    return sorted(db[COLLECTION].find(query, {"hash": 0}), key=lambda r: (aware(r["created"]), r["_id"]))


def get(db, token_id):
    """Return a token's record (without its hash), or None (also for what cannot be an id: no query then)."""
    if not isinstance(token_id, str) or not ID.fullmatch(token_id):
        return None
    return db[COLLECTION].find_one({"_id": token_id}, {"hash": 0})


def revoke(db, token_id):
    """Delete a token; return whether it existed."""
    return db[COLLECTION].delete_one({"_id": token_id}).deleted_count == 1


def revoke_user(db, user):
    """Delete every token of a user (removed from the users file); return how many there were."""
    return db[COLLECTION].delete_many({"user": user}).deleted_count
