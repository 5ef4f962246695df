"""GET /healthz: for supervisors and load balancers."""

from flask import Blueprint, current_app, jsonify
from pymongo.errors import PyMongoError

from ... import __version__
from .. import db
from ..openapi import answer, op, register

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    """Answer 200 when the database answers, 503 when it does not; say whether the accounts are stale.

    A users file that cannot be read leaves the last good accounts serving: still 200, with
    "status": "degraded" and "users_file" saying what is wrong, for a monitor to alert on. So do
    refused writes (a FerretDB set-up without a write lock every writer sees): reads are served.
    "write_lock" and "write_lock_scope" say how writes are serialised (atomic.py).
    """
    up = db.ping()
    users = current_app.extensions["rm_users"].status()
    degraded = users["status"] == "stale"
    body = {"database": "up" if up else "down", "users_file": users, "version": __version__}
    probe = current_app.extensions["rm_engine"]
    if up or probe.engine is not None:
        try:
            engine = probe.get()
            degraded = degraded or engine.refusal is not None
            body.update(engine.describe())
        except PyMongoError:
            pass  # went down between the ping and the probe: the ping's answer stands
    body["status"] = "unavailable" if not up else "degraded" if degraded else "ok"
    return jsonify(body), 200 if up else 503


def _openapi():
    """The OpenAPI of /healthz."""
    paths = {
        "/healthz": {"get": op("health", "Is the service up (and its database)?", "health", responses={
            "200": answer("Health", "up"), "503": answer("Health", "the database does not answer")})},
    }
    schemas = {
        "Health": {"type": "object", "properties": {
            "status": {"type": "string", "enum": ["ok", "degraded", "unavailable"]},
            "database": {"type": "string", "enum": ["up", "down"]}, "version": {"type": "string"},
            "users_file": {"type": "object", "description": "the accounts in use: status ok, stale (the file on disk "
                           "is unusable: error, since; the last good accounts serve) or none", "properties": {
                               "status": {"type": "string", "enum": ["ok", "stale", "none"]},
                               "accounts": {"type": "integer"}, "error": {"type": "string"},
                               "since": {"type": "string"}}},
            "engine": {"type": "string", "enum": ["mongodb", "ferretdb"]},
            "engine_version": {"type": "string", "nullable": True},
            "writes": {"type": "string", "description": "how conditional writes are made atomic on this engine "
                       "(\"refused: ...\" when this set-up cannot serialise them: writes answer 503)"},
            "write_lock": {"type": "string", "enum": ["postgresql-advisory", "flock", "none", "pending"],
                           "description": "the lock every conditional write holds: a PostgreSQL advisory lock "
                           "(FerretDB over PostgreSQL), a flock (FerretDB over SQLite), none (MongoDB), pending "
                           "(its database does not answer yet: writes answer 503)"},
            "write_lock_scope": {"type": "string", "enum": ["database", "host"], "nullable": True,
                                 "description": "who the lock serialises: every host writing to the database, "
                                 "or the processes of this host only"}}},
    }
    return paths, schemas, [{"name": "health", "description": "for supervisors and load balancers"}]


def init_app(app):
    """Register the health route."""
    register(app, *_openapi())
    app.register_blueprint(bp)
