"""GET /healthz: for supervisors and load balancers."""

from flask import Blueprint, current_app, jsonify
from pymongo.errors import PyMongoError

from ... import __version__
from .. import db

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    """Answer 200 when the database answers, 503 when it does not; say whether the accounts are stale.

    A users file that cannot be read leaves the last good accounts serving: still 200, with
    "status": "degraded" and "users_file" saying what is wrong, for a monitor to alert on.
    """
    up = db.ping()
    users = current_app.extensions["rm_users"].status()
    status = "unavailable" if not up else "degraded" if users["status"] == "stale" else "ok"
    body = {"status": status, "database": "up" if up else "down", "users_file": users, "version": __version__}
    probe = current_app.extensions["rm_engine"]
    if up or probe.engine is not None:
        try:
            body.update(probe.get().describe())
        except PyMongoError:
            pass  # went down between the ping and the probe: the ping's answer stands
    return jsonify(body), 200 if up else 503


def init_app(app):
    """Register the health route."""
    app.register_blueprint(bp)
