"""GET /healthz: for supervisors and load balancers."""

from flask import Blueprint, current_app, jsonify
from pymongo.errors import PyMongoError

from . import __version__, db

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    """Answer 200 when the database answers, 503 when it does not."""
    up = db.ping()
    body = {"status": "ok" if up else "unavailable", "database": "up" if up else "down", "version": __version__}
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
