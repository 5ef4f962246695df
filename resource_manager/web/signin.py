"""Sign-in with a form and a signed session cookie, against the API's users file."""

import hashlib
import hmac
from urllib.parse import urlsplit

from flask import abort, current_app, flash, g, redirect, render_template, request, session, url_for

from . import bp

WRITE_ROLES = ("operator", "admin")


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
        if record is not None and hmac.compare_digest(session.get("fp", ""), _fingerprint(record)):
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
        flash(f"Signed in as {username} ({record.get('role', 'reader')}).", "success")
        return redirect(next_url, code=303)
    return render_template("login.html", next_url=next_url)


@bp.post("/ui/logout")
def logout():
    """Sign out and go back to the dashboard."""
    session.clear()
    flash("Signed out.", "info")
    return redirect(url_for("home"), code=303)
