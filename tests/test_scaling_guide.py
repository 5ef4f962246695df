"""docs/operations/scaling.md as written: two API hosts set up with its settings, checked with its command.

The guide's blocks marked `<!-- scaling:NAME -->` are read from the page: the hosts' environment
(only the addresses are this machine's), the health check and its expected output, the sweep's cron
line. What the guide says about dying hosts is proven in test_multihost.py.
"""

import json
import os
import re
import shlex
import subprocess
import sys
import threading
import uuid

import pymongo
import pytest
import requests

from resource_manager.api import config

from .cluster import host_env
from .deployed import ROOT, Gunicorn
from .support import PASSWORDS
from .test_accounts import sign_in
from .test_web import HTML, token

GUIDE = os.path.join(ROOT, "docs", "operations", "scaling.md")


def block(name):
    """Return the fenced block that follows `<!-- scaling:NAME -->` in the guide."""
    with open(GUIDE, encoding="utf-8") as fh:
        text = fh.read()
    return re.search(rf"<!-- scaling:{name} -->\n```[a-z]*\n(.*?)```", text, re.S).group(1)


def guide_env():
    """Return the guide's per-host environment: {name: value} of its `export` lines."""
    found = {}
    for line in block("host-env").splitlines():
        if line.startswith("export "):
            name, _, value = line[len("export "):].partition("=")
            found[name] = shlex.split(value)[0]
    return found


def test_every_variable_of_the_hosts_environment_is_read_by_the_server():
    names = set(guide_env())
    known = ({"MONGO_URI"} | {f"RM_{key}" for key in config.SETTINGS} | config.GUNICORN_VARIABLES
             | config.OTHER_VARIABLES)
    assert names and names <= known, names - known
    assert {"MONGO_URI", "RM_POSTGRES_URL", "RM_SECRET_KEY", "RM_TRUSTED_PROXIES", "RM_USERS_FILE"} <= names


@pytest.fixture(scope="module")
def hosts(localdb, users_file, tmp_path_factory):
    """Two gunicorn hosts with the guide's environment; this machine's addresses for its database and bind."""
    log_dir = tmp_path_factory.mktemp("guide")
    dbname = f"test_guide_{uuid.uuid4().hex[:8]}"
    env = guide_env()
    here = {"MONGO_URI": localdb.uri, "RM_USERS_FILE": users_file, **host_env(localdb)}
    assert here.keys() - {"RM_SQLITE_DIR"} <= env.keys()  # the guide's own names, only the values are ours
    servers = []
    try:
        for i in range(2):
            lock_dir = log_dir / f"host{i}"
            lock_dir.mkdir()
            settings = {k: v for k, v in {**env, **here}.items() if k not in ("MONGO_URI", "RM_USERS_FILE", "RM_BIND")}
            server = Gunicorn(localdb.uri, dbname, users_file, str(log_dir / f"host{i}.log"), workers=1, threads=4,
                              env=dict(settings, RM_WRITE_LOCK_DIR=str(lock_dir)))
            servers.append(server.start())
        yield servers, dbname
    finally:
        for server in servers:
            server.stop()
        with pymongo.MongoClient(localdb.uri) as client:
            client.drop_database(dbname)


def test_the_guides_health_check_prints_what_the_guide_says(hosts):
    servers, _ = hosts
    program = re.search(r"python3 -c '([^']+)'", block("check")).group(1)
    printed = ""
    for server in servers:
        body = requests.get(server.url + "/healthz", timeout=10).text
        printed += subprocess.run([sys.executable, "-c", program], input=body, capture_output=True, text=True,
                                  check=True).stdout
    assert printed == block("check-output")


def test_a_dashboard_session_made_on_one_host_works_on_the_other(hosts):
    (first, second), _ = hosts
    requests.post(first.url + "/machines", json={"hostname": "g1", "state": "idle"},
                  auth=("operator", PASSWORDS["operator"]), timeout=30).raise_for_status()
    browser, signed_in = sign_in(first)
    assert signed_in.status_code == 303
    page = browser.get(second.url + "/ui/machines/g1", timeout=30)
    changed = browser.post(second.url + "/ui/machines/g1/state", data={"state": "needs_repair",
                                                                         "csrf_token": token(page.text)},
                           headers=HTML, allow_redirects=False, timeout=30)
    assert changed.status_code == 303, changed.text
    assert requests.get(first.url + "/machines/g1", timeout=30).json()["state"] == "needs_repair"


def test_behind_the_load_balancer_the_throttle_counts_clients_not_the_balancer(hosts):
    (first, _), _ = hosts

    def login(password, client):
        return requests.post(first.url + "/machines", json={"hostname": f"t{uuid.uuid4().hex[:8]}", "state": "idle"},
                             auth=("operator", password), headers={"X-Forwarded-For": client}, timeout=30).status_code

    allowed = 5  # AUTH_MAX_FAILURES's default (api/ratelimit.py)
    assert [login("wrong", "203.0.113.7") for _ in range(allowed)] == [401] * allowed
    assert login(PASSWORDS["operator"], "203.0.113.7") == 429  # that client is throttled...
    assert login(PASSWORDS["operator"], "203.0.113.8") == 201  # ...not everyone behind the same balancer


def test_the_sweep_from_both_hosts_cron_at_once_is_harmless(hosts, localdb):
    _servers, dbname = hosts
    command = re.search(r"\.venv/bin/(rm-sweep)", block("sweep")).group(1)
    executable = os.path.join(os.path.dirname(sys.executable), command)
    env = dict(os.environ, MONGO_URI=localdb.uri, RM_MONGO_DBNAME=dbname, DO_NOT_TRACK="1", **host_env(localdb))
    results = [None, None]

    def run(i):
        results[i] = subprocess.run([executable], env=env, capture_output=True, text=True, timeout=120)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(150)
    for result in results:
        assert result.returncode == 0, result.stderr
        assert set(json.loads(result.stdout)) >= {"expired", "repaired", "released"}
