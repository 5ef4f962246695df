"""Fixtures: the embedded database (one per session) and a live API server (one per test)."""

import datetime
import json
import os
import uuid

import pymongo
import pytest

from resource_manager.core.clock import ManualClock
from resource_manager.localdb import LocalDB

from .browser import launch, new_page
from .support import PASSWORDS, UNDOCUMENTED, LiveServer, free_port, write_users_file

SHARED_SECRET = "tests-only-secret-key"


@pytest.fixture(scope="session")
def localdb(tmp_path_factory):
    """The embedded MongoDB-compatible server, started once for the whole run."""
    db = LocalDB(str(tmp_path_factory.mktemp("localdb")))
    db.start()
    yield db
    db.stop()


@pytest.fixture
def own_db(tmp_path):
    """An embedded database of this test's own on a fixed port, to stop, kill and restart."""
    db = LocalDB(str(tmp_path / "data"), port=free_port())
    db.start()
    yield db
    db.stop()


@pytest.fixture(scope="module")
def browser():
    """Debian's headless chromium, one per test module."""
    yield from launch()


@pytest.fixture
def page(browser, server):
    """A fresh browser page whose relative URLs go to the live server."""
    yield from new_page(browser, server)


@pytest.fixture(scope="session")
def users_file(tmp_path_factory):
    """A users file with one account per role (see support.PASSWORDS)."""
    return write_users_file(str(tmp_path_factory.mktemp("users") / "users.json"))


@pytest.fixture
def dbname():
    """A database name of this test's own."""
    return f"test_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def overrides(localdb, users_file, dbname):
    """The create_app() overrides that point at this test's database."""
    return {"MONGO_URI": localdb.uri, "MONGO_DBNAME": dbname, "USERS_FILE": users_file,
            "SECRET_KEY": SHARED_SECRET}


@pytest.fixture(scope="session")
def _shared_servers(localdb):
    """One live server per users file, shared by the tests it suits (see `server`); {users_file: LiveServer}."""
    servers = {}
    yield servers
    with pymongo.MongoClient(localdb.uri) as client:
        for live in servers.values():
            live.stop()
            client.drop_database(live.app.config["MONGO_DBNAME"])


@pytest.fixture
def server(request, localdb, users_file, _shared_servers):
    """The API served over real HTTP on 127.0.0.1, its database empty at the start of the test.

    Shared by the whole session (emptied before each test) unless the test asks for `overrides`
    or `dbname` (it builds servers of its own beside this one, on the same database), its module
    overrides `overrides` (settings of its own), or it is
    marked `own_server` (it changes the app: routes added, settings): those get a server of
    their own on a database of their own, dropped afterwards.
    """
    own = request.node.get_closest_marker("own_server") or {"overrides", "dbname", "clock"} & set(request.fixturenames)
    if not own:
        # A module that overrides `overrides` (settings of its own) needs a server built with them.
        wanted = dict(request.getfixturevalue("overrides"))
        wanted.pop("MONGO_DBNAME", None)
        own = wanted != {"MONGO_URI": localdb.uri, "USERS_FILE": users_file, "SECRET_KEY": SHARED_SECRET}
    if not own:
        live = _shared_servers.get(users_file)
        if live is None:
            live = _shared_servers[users_file] = LiveServer(
                {"MONGO_URI": localdb.uri, "MONGO_DBNAME": f"test_shared_{uuid.uuid4().hex[:12]}",
                 "USERS_FILE": users_file, "SECRET_KEY": SHARED_SECRET})
        live.reset()
        yield live
        live.unwrap()
        return
    dbname = request.getfixturevalue("dbname")
    if "clock" in request.fixturenames:
        # Time moves when the test says (clock.advance), and only the test ends leases and waits:
        # its server has no upkeep ticker (QUEUE_TICK_SECONDS=0); the tests of the ticker use real time.
        overrides = dict(request.getfixturevalue("overrides"), QUEUE_TICK_SECONDS=0)
        live = LiveServer(overrides, clock=request.getfixturevalue("clock"))
    else:
        live = LiveServer(request.getfixturevalue("overrides"))
    yield live
    live.stop()
    with pymongo.MongoClient(localdb.uri) as client:
        client.drop_database(dbname)


@pytest.fixture
def clock():
    """A clock for the server's lifecycles that moves only when told (clock.advance(seconds)).

    A test that asks for it gets a server of its own on this clock, without the upkeep ticker.
    """
    return ManualClock(datetime.datetime.now(datetime.timezone.utc))


@pytest.fixture
def anon(server):
    return server.session()


@pytest.fixture
def admin(server):
    return server.session(("admin", PASSWORDS["admin"]))


@pytest.fixture
def operator(server):
    return server.session(("operator", PASSWORDS["operator"]))


@pytest.fixture
def reader(server):
    return server.session(("reader", PASSWORDS["reader"]))


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    # Requests to 127.0.0.1 must never go through a proxy from the environment.
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.delenv("MONGO_URI", raising=False)
    for name in list(os.environ):
        if name.startswith("RM_"):
            monkeypatch.delenv(name)


def pytest_collection_modifyitems(items):
    # The status drift check reads what every other test's servers answered: it runs last.
    last = [item for item in items if item.name == "test_every_status_sent_is_documented"]
    items[:] = [item for item in items if item not in last] + last


# `make test` runs the tests in parallel processes (pytest-xdist). Each process records the statuses
# its servers sent undocumented (support.UNDOCUMENTED) and hands them to the controller, which fails
# the run if any process saw one: test_every_status_sent_is_documented sees only its own process's.
def pytest_sessionfinish(session):
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput["undocumented"] = json.dumps([[list(key), test] for key, test in UNDOCUMENTED.items()])
        return
    if UNDOCUMENTED:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        reporter.write_sep("=", "statuses our servers sent that /openapi.json does not document", red=True)
        for (path, method, status), test in sorted(UNDOCUMENTED.items()):
            reporter.write_line(f"{method.upper()} {path} answered {status} (sent in {test})")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    """An xdist worker finished: gather the undocumented statuses it saw."""
    for key, test in json.loads(getattr(node, "workeroutput", {}).get("undocumented", "[]")):
        UNDOCUMENTED.setdefault(tuple(key), test)
