"""Sign-in with a form and a signed session cookie, against the API's users file.

Sessions are revocable on the server: the cookie carries a random session id, and a session
is valid only while the document `web_sessions/{_id: id}` exists (read by _id, which every
engine indexes) and the account's password is the one it signed in with. Sign-out deletes
the document, so a copy of the cookie taken before sign-out is worth nothing after it.
"""

import datetime
import hashlib
import hmac
import secrets
from urllib.parse import urlsplit

from flask import abort, current_app, flash, g, redirect, render_template, request, session, url_for

from ..api.db import database
from ..schema import WRITE_ROLES
from . import bp

SESSIONS = "web_sessions"


def _now():
    return datetime.datetime.now(datetime.timezone.utc)


def _start(username):
    """Store a new server-side session for `username`; return its id."""
    sid = secrets.token_urlsafe(32)
    now = _now()
    lifetime = datetime.timedelta(seconds=current_app.permanent_session_lifetime.total_seconds())
    sessions = database()[SESSIONS]
    # No TTL on the embedded database: sign-ins prune the expired ones.
    sessions.delete_many({"expires": {"$lt": now}})
    sessions.insert_one({"_id": sid, "user": username, "created": now, "expires": now + lifetime})
    return sid


def _live(sid, username):
    if not isinstance(sid, str) or not sid:
        return False
    doc = database()[SESSIONS].find_one({"_id": sid})
    return doc is not None and doc.get("user") == username and doc["expires"] > _now()


def _fingerprint(record):
    # Tied to the stored password hash: changing a password signs its sessions out.
    key = current_app.config["SECRET_KEY"].encode()
    return hmac.new(key, record["password"].encode(), hashlib.sha256).hexdigest()[:32]


def enabled():
    """Return whether sign-in is possible (it needs a SECRET_KEY)."""
    return bool(current_app.config.get("SECRET_KEY"))


def current():
    """Return {"username", "role"} of the signed-in dashboard user, or None."""
    if "rm_web_user" in g:
        return g.rm_web_user
    user = None
    name = session.get("user") if enabled() else None
    if name:
        record = current_app.extensions["rm_users"].get(name)
        if (record is not None and hmac.compare_digest(session.get("fp", ""), _fingerprint(record))
                and _live(session.get("sid"), name)):
            user = {"username": name, "role": record.get("role", "reader")}
    g.rm_web_user = user
    return user


def can_act():
    """Return whether the signed-in user may change things."""
    user = current()
    return user is not None and user["role"] in WRITE_ROLES


def require_writer():
    """Return the signed-in operator or admin; abort 401/403 otherwise."""
    user = current()
    if user is None:
        abort(401, description="sign in to do this")
    if user["role"] not in WRITE_ROLES:
        abort(403, description=f"user '{user['username']}' has role '{user['role']}', which may only read")
    return user


def safe_next(target, default):
    """Return `target` if it is a path on this site, else `default` (no open redirects)."""
    if not target:
        return default
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in target):  # CR/LF would split the Location header
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return default
    return target


@bp.route("/ui/login", methods=["GET", "POST"])
def login():
    """Show the sign-in form; sign in on POST."""
    if not enabled():
        return render_template("login.html", disabled=True), 503
    next_url = safe_next(request.values.get("next"), url_for("home"))
    if request.method == "POST":
        username = request.form.get("username", "")
        password = request.form.get("password", "")
        record = current_app.extensions["rm_users"].verify(username, password)
        if record is None:
            flash("Wrong user name or password.", "danger")
            return render_template("login.html", username=username, next_url=next_url), 401
        session.clear()
        session.permanent = True
        session["user"] = username
        session["fp"] = _fingerprint(record)
        session["sid"] = _start(username)
        flash(f"Signed in as {username} ({record.get('role', 'reader')}).", "success")
        return redirect(next_url, code=303)
    return render_template("login.html", next_url=next_url)


@bp.post("/ui/logout")
def logout():
    """Sign out (this session ends on the server too) and go back to the dashboard."""
    sid = session.get("sid")
    if isinstance(sid, str) and sid:
        database()[SESSIONS].delete_one({"_id": sid})
    session.clear()
    flash("Signed out.", "info")
    return redirect(url_for("home"), code=303)
