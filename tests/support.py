"""Test helpers: a live HTTP server around create_app(), and credentials."""

import contextlib
import os
import socket
import threading
import uuid

import pymongo
import requests
from flask import request, request_finished
from werkzeug.serving import make_server

from resource_manager.api import auth, openapi
from resource_manager.app import create_app

PASSWORDS = {"admin": "admin-pw-1", "operator": "operator-pw-1", "reader": "reader-pw-1"}
ADMIN = ("admin", PASSWORDS["admin"])
OPERATOR = ("operator", PASSWORDS["operator"])
READER = ("reader", PASSWORDS["reader"])


def free_port():
    """Return a port on 127.0.0.1 nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_users_file(path, legacy_admin=False):
    """Write one account per role (PASSWORDS); with legacy_admin, admin/admin as the original tool had."""
    for role, password in PASSWORDS.items():
        auth.set_user(path, role, password, role)
    if legacy_admin:
        auth.set_user(path, "admin", "admin", "admin")
    return path


# Routes that are not API: pages, assets, and Eve's method-override twin of item URLs.
NOT_API = ("web.", "bootstrap.", "static", "home")
# Every (route, method, status) a test server answered that its /openapi.json does not document,
# with a test that sent it; test_openapi_drift.py, run last, asserts there are none.
UNDOCUMENTED = {}


def _documented(app):
    found = set()
    for path, item in openapi.document(app)["paths"].items():
        for method, op in item.items():
            if method != "parameters":
                found.update((openapi.shape(path), method, status) for status in op["responses"])
    return found


def _record_status(app, response, **_extra):
    rule = request.url_rule
    if rule is None or rule.endpoint.startswith(NOT_API) or rule.endpoint.endswith("|item_post_override"):
        return
    if rule.endpoint not in app.extensions["rm_served_at_start"]:  # added by a test (test-only routes)
        return
    method = request.method.lower()
    if method in ("head", "options") or response.status_code == 500:  # a 500 is a bug, caught by its own test
        return
    if "rm_documented" not in app.extensions:
        app.extensions["rm_documented"] = _documented(app)
    keys = {(openapi.shape(t), method, str(response.status_code)) for t in openapi.templates(rule.rule)}
    if not keys & app.extensions["rm_documented"]:
        UNDOCUMENTED.setdefault(min(keys), os.environ.get("PYTEST_CURRENT_TEST", "?"))


class LiveServer:
    """create_app(overrides) served over real HTTP on 127.0.0.1, port chosen by the OS."""

    def __init__(self, overrides, clock=None):
        self.app = create_app(overrides, clock=clock)
        self.app.extensions["rm_served_at_start"] = {rule.endpoint for rule in self.app.url_map.iter_rules()}
        request_finished.connect(_record_status, self.app)
        self._server = make_server("127.0.0.1", 0, self.app, threaded=True)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        # A short poll: stop() waits for the loop to notice, 0.5 s by default, at every test's teardown.
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()
        self.app.extensions["rm_upkeep"].start()  # as gunicorn's post_worker_init does

    def wrap(self, middleware):
        """Put a WSGI middleware in front of the app (fault injection); return the middleware."""
        middleware.app = self._server.app
        self._server.app = middleware
        return middleware

    @property
    def db(self):
        """The pymongo Database behind the app, to check what really got stored."""
        with self.app.app_context():
            return self.app.data.driver.db

    def session(self, auth=None):
        """Return a requests.Session for this server, with `auth` (user, password) if given."""
        return ApiSession(self.url, auth)

    def unwrap(self):
        """Take away every middleware `wrap` put in front of the app."""
        self._server.app = self.app

    def reset(self):
        """Make a served app as good as new for the next test: empty database, no middleware, no throttle.

        The collections are emptied, not dropped: their indexes stay, and creating a database
        costs more than emptying its few small collections.
        """
        from resource_manager.api import ratelimit
        from resource_manager.web import queries

        self.unwrap()
        empty_database(self.db)
        self.app.extensions["rm_users"].limiter = ratelimit.from_config(self.app.config)
        self.app.data._counts.clear()  # the data layer's recent listing counts (datalayer.py)
        queries.cache_of(self.app).clear()  # the dashboard's counts and orders (web/queries.py)
        self.app.extensions["rm_core"].candidates.forget()
        self.app.extensions["rm_event_feed"].forget()  # its ring holds the events of the emptied database

    def stop(self):
        from resource_manager.web import queries

        self.app.extensions["rm_upkeep"].stop()
        self._server.shutdown()
        self._server.server_close()
        queries.cache_of(self.app).close()
        with self.app.app_context():
            for client, _db in self.app.extensions["pymongo"].values():
                client.close()
        self.app.extensions["rm_engine"].close()  # its write lock's PostgreSQL session, if any


class ApiSession(requests.Session):
    """A requests.Session whose paths are relative to the server's URL, with a timeout."""

    def __init__(self, base, auth=None):
        super().__init__()
        self.base = base
        self.auth = auth

    def request(self, method, url, *args, **kwargs):
        kwargs.setdefault("timeout", 30)
        return super().request(method, self.base + url, *args, **kwargs)

    def write(self, method, url, json=None, **kwargs):
        """PATCH/PUT/DELETE an item with If-Match set to its current ETag."""
        etag = self.get(url).json()["_etag"]
        return self.request(method, url, json=json, headers={"If-Match": etag}, **kwargs)


@contextlib.contextmanager
def seeded_server(mongo_uri, users_file, name, seeds, auth, **overrides):
    """Serve a database of its own, seeded with (path, document) POSTs as `auth`; drop it afterwards."""
    dbname = f"test_{name}_{uuid.uuid4().hex[:8]}"
    live = LiveServer(dict({"MONGO_URI": mongo_uri, "MONGO_DBNAME": dbname, "USERS_FILE": users_file}, **overrides))
    try:
        with live.session(auth) as session:
            for path, doc in seeds:
                assert session.post(path, json=doc).status_code == 201
        yield live
    finally:
        live.stop()
        with pymongo.MongoClient(mongo_uri) as client:
            client.drop_database(dbname)


def empty_database(db):
    """Delete every document of every collection of `db`, keeping the collections and their indexes."""
    for name in db.list_collection_names():
        db[name].delete_many({})


def run_together(n, target, timeout=120):
    """Run target(i) in n threads released together by a barrier; return their results in order."""
    barrier = threading.Barrier(n)
    results = [None] * n

    def body(i):
        barrier.wait()
        results[i] = target(i)

    threads = [threading.Thread(target=body, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    assert not any(t.is_alive() for t in threads)
    return results


SEED_TAGS = {"memory": 17179869184, "cpucores": 8, "arch": "x86_64"}

def seed_machines(db, count, prefix="m"):
    """Insert `count` machines as Eve stores them (with _created, _updated, _etag); return hostnames."""
    import datetime
    import uuid

    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    hostnames = [f"{prefix}{i:05d}.lab.example.com" for i in range(count)]
    docs = [{"hostname": h, "state": "idle", "owner": None, "job_id": None, "tags": dict(SEED_TAGS, rack=f"r{i % 40}"),
             "_created": now, "_updated": now, "_etag": uuid.uuid4().hex} for i, h in enumerate(hostnames)]
    for start in range(0, count, 1000):
        db.machines.insert_many(docs[start:start + 1000], ordered=False)
    return hostnames
