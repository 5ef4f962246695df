#!/usr/bin/env python3
"""./server.py: serve the API for development, on the embedded database unless MONGO_URI is set.

For production, serve `resource_manager.app:create_app()` with gunicorn (see supervisord.conf).
"""

import argparse
import logging
import os
import shutil
import signal
import socket
import sys

if __package__ in (None, ""):  # run as ./server.py from inside resource_manager/
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from resource_manager.api import auth, requestid  # noqa: E402

log = logging.getLogger("resource_manager.server")

DEV_USER, DEV_PASSWORD = "admin", "admin"
# Signs dashboard sessions under `make run` only; production sets SECRET_KEY (RM_SECRET_KEY).
DEV_SECRET_KEY = "dev-only-secret-key-never-in-production"


def parse_args(argv):
    # prog: how it was started (rm-server, or server.py for ./server.py and make run).
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"), help="address to serve on (HOST)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "5000")), help="port (PORT)")
    parser.add_argument("--data-dir", default=os.environ.get("RM_DATA_DIR", "var"),
                        help="where the embedded database and the dev users file live (RM_DATA_DIR)")
    parser.add_argument("--dev-account", action="store_true",
                        help=f"create the development account {DEV_USER}/{DEV_PASSWORD} if no users file exists")
    return parser.parse_args(argv)


def ensure_dev_account(path):
    """Create the admin/admin development account when the users file does not exist."""
    if os.path.exists(path):
        return
    auth.set_user(path, DEV_USER, DEV_PASSWORD, "admin")
    log.warning("DEVELOPMENT ACCOUNT created in %s: user '%s', password '%s', role admin. "
                "Never use it in production; manage accounts with `rm-users`.", path, DEV_USER, DEV_PASSWORD)


def announce_cli():
    """Say where rmctl is: `make run` installs it in .venv/bin, which is on nobody's PATH."""
    here = os.path.dirname(sys.executable)
    rmctl = os.path.join(here, "rmctl")
    if not os.access(rmctl, os.X_OK):
        return
    if shutil.which("rmctl") == rmctl:
        log.info("the CLI: rmctl (%s)", rmctl)
    else:
        log.info("the CLI: %s (not on PATH: run it by that path, or add %s to PATH, e.g. `. %s/activate`)",
                 rmctl, here, os.path.relpath(here))


def _listen(host, port):
    """Return a listening socket on host:port (bound now, served later)."""
    from werkzeug.serving import select_address_family

    listener = socket.socket(select_address_family(host, port), socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, port))
    listener.listen(128)
    listener.set_inheritable(True)
    return listener


def _stop(signum, frame):
    raise KeyboardInterrupt


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    # Ctrl-C and SIGTERM both stop the API and then the database, even when started in the background.
    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    requestid.install_record_factory()
    logging.basicConfig(level=logging.INFO, format=requestid.TEXT_FORMAT)
    # Hold the API's port before the database starts: the database takes a free port of its own, which
    # must never be ours, and a port already in use should fail here, not after the database is up.
    try:
        listener = _listen(args.host, args.port)
    except OSError as e:
        log.error("cannot serve on %s:%d: %s", args.host, args.port, e.strerror or e)
        return 1
    localdb = None
    overrides = {}
    if not os.environ.get("MONGO_URI") and not os.environ.get("RM_MONGO_URI"):
        from resource_manager.localdb import LocalDB

        localdb = LocalDB(os.path.join(args.data_dir, "db"), port=int(os.environ.get("RM_LOCALDB_PORT", "0")))
        localdb.start()
        overrides.update(localdb.settings())  # MONGO_URI, and where its data is (the write lock's key)
        log.info("embedded database (FerretDB over %s) at %s, data in %s", localdb.engine, localdb.uri,
                 localdb.data_dir)
    if args.dev_account and not os.environ.get("RM_USERS_FILE"):
        overrides["USERS_FILE"] = os.path.join(args.data_dir, "users.json")
        ensure_dev_account(overrides["USERS_FILE"])
    if args.dev_account and not os.environ.get("RM_SECRET_KEY") and not os.environ.get("RM_SETTINGS_FILE"):
        overrides["SECRET_KEY"] = DEV_SECRET_KEY
        log.warning("DEVELOPMENT SECRET_KEY in use for dashboard sessions: '%s'. "
                    "Set RM_SECRET_KEY to a long random value in production.", DEV_SECRET_KEY)
    try:
        from werkzeug.serving import make_server

        from resource_manager.app import create_app

        app = create_app(overrides)
        app.extensions["rm_upkeep"].start()
        server = make_server(args.host, args.port, app, threaded=True, fd=listener.fileno())
        log.info("serving the API on http://%s:%d/", args.host, listener.getsockname()[1])
        announce_cli()
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        listener.close()
        if localdb is not None:
            localdb.stop()
            log.info("embedded database stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
