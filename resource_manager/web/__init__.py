"""The dashboard: a server-rendered blueprint (Bootstrap 5 served locally), sign-in and actions."""

import logging

from flask import Blueprint, abort, current_app, g, make_response, request
from flask_bootstrap import Bootstrap5
from flask_wtf.csrf import CSRFProtect

from ..api.intake import add_body_gate

log = logging.getLogger(__name__)

bp = Blueprint("web", __name__, template_folder="templates", static_folder="static",
               static_url_path="/ui/static")
csrf = CSRFProtect()

# No external origin anywhere: the dashboard must work on an isolated lab network.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self'; "
       "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


def _security_headers(response):
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    if response.mimetype == "text/html":
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        if g.get("rm_web_user"):
            # A signed-in page holds a CSRF token and the user's name: no shared cache may keep it.
            response.headers["Cache-Control"] = "private, no-store"
    return response


@bp.before_request
def _protect_posts():
    # Every state-changing dashboard request carries the session's CSRF token.
    if request.method == "POST":
        if not current_app.config.get("SECRET_KEY"):
            # No key, no sessions: the dashboard is read-only (CSRF would fail with a 500).
            abort(403, description="sign-in is disabled on this server (no SECRET_KEY): the dashboard is read-only")
        csrf.protect()


def _signed_in_first():
    # Dashboard actions need a signed-in session: refuse without one before the form is read.
    if request.blueprint != "web" or request.endpoint in ("web.login", "web.logout"):
        return None
    from . import signin

    if signin.current() is None:
        abort(401, description="sign in to do this")
    return None


def _browser_home(api_home):
    from .views import dashboard

    def home(*args, **kwargs):
        # Browsers asking for HTML get the dashboard; API clients keep Eve's JSON entry point.
        best = request.accept_mimetypes.best_match(["application/json", "text/html"])
        if request.method == "GET" and best == "text/html":
            response = make_response(dashboard())
        else:
            response = make_response(api_home(*args, **kwargs))
        response.vary.add("Accept")
        return response

    return home


def init_app(app):
    """Register the dashboard, /docs and /openapi.json; set Bootstrap, CSRF and cookie defaults."""
    from . import docs, queries, signin, views  # noqa: F401  (routes register on bp

    app.config["BOOTSTRAP_SERVE_LOCAL"] = True
    app.config.setdefault("WTF_CSRF_CHECK_DEFAULT", False)  # the API uses HTTP Basic, not cookies
    app.config.setdefault("WTF_CSRF_TIME_LIMIT", None)  # the token lives as long as the session
    # Flask's defaults exist already (SameSite None, 31-day sessions): set ours unless configured.
    app.config["SESSION_COOKIE_HTTPONLY"] = True
    app.config["SESSION_COOKIE_SAMESITE"] = app.config.get("SESSION_COOKIE_SAMESITE") or "Lax"
    app.config["PERMANENT_SESSION_LIFETIME"] = int(app.config.get("DASHBOARD_SESSION_SECONDS", 8 * 3600))
    if app.config.get("SECRET_KEY") is not None:
        app.config["SECRET_KEY"] = str(app.config["SECRET_KEY"])
    else:
        log.warning("SECRET_KEY is not set: the dashboard is read-only and sign-in is disabled")
    queries.init_app(app)
    add_body_gate(app, _signed_in_first)
    Bootstrap5(app)
    csrf.init_app(app)
    app.register_blueprint(bp)
    app.after_request(_security_headers)
    app.view_functions["home"] = _browser_home(app.view_functions["home"])
