"""The original tool's documented shell lines, run verbatim with cwd=resource_manager/ as subprocesses."""

import json
import os
import shutil
import stat
import subprocess
import sys

import pytest

from .cli_helpers import PACKAGE_DIR, shell, subprocess_env
from .support import write_users_file


@pytest.fixture(scope="module")
def users_file(tmp_path_factory):
    """The test accounts plus admin/admin, the credentials the original tool used by default."""
    return write_users_file(str(tmp_path_factory.mktemp("users") / "users.json"), legacy_admin=True)


@pytest.fixture
def env(server):
    # Only the endpoint is set: the server listens on a random port, not on 5000.
    return subprocess_env(RM_ENDPOINT=server.url)


def test_client_py_is_an_executable_script():
    path = os.path.join(PACKAGE_DIR, "client.py")
    assert os.stat(path).st_mode & stat.S_IXUSR
    with open(path, encoding="utf-8") as fh:
        assert fh.readline().startswith("#!/usr/bin/env python3")


def test_documented_session_verbatim(env, server):
    result = shell("./client.py list", env)
    assert result.code == 0, result.err
    assert json.loads(result.out) == []

    result = shell("""./client.py create --json '{"hostname":"my-machine", "owner": "tony", "state": "idle"}'""", env)
    assert result.code == 0, result.err
    assert server.db.machines.find_one({"hostname": "my-machine"})["owner"] == "tony"

    result = shell("""./client.py update --json '{"hostname":"my-machine", "owner": ""}'""", env)
    assert result.code == 0, result.err
    assert server.db.machines.find_one({"hostname": "my-machine"})["owner"] == ""

    listed = shell("./client.py list", env)
    assert [m["hostname"] for m in json.loads(listed.out)] == ["my-machine"]

    result = shell("""./client.py delete --json '{"hostname":"my-machine"}'""", env)
    assert result.code == 0, result.err
    assert server.db.machines.count_documents({}) == 0


def test_list_addresses_verbatim(env, server, operator):
    operator.post("/public-addresses", json={"address": "203.0.113.7", "owner": "web"})
    result = shell("./client.py list -r public-addresses", env)
    assert result.code == 0, result.err
    assert [a["address"] for a in json.loads(result.out)] == ["203.0.113.7"]


def test_list_private_addresses_with_endpoint_flag(server, operator):
    operator.post("/private-addresses", json={"address": "10.0.0.7"})
    env = subprocess_env()  # no RM_ENDPOINT: the flag alone says where
    result = shell(f"./client.py list -r private-addresses -e {server.url}", env)
    assert result.code == 0, result.err
    assert [a["address"] for a in json.loads(result.out)] == ["10.0.0.7"]


def test_installed_rmctl_runs_the_same_cli(server, operator):
    operator.post("/machines", json={"hostname": "h1", "state": "idle"})
    env = subprocess_env(RM_ENDPOINT=server.url)
    via_script = shell("./client.py list --fields hostname,state --format csv", env)
    via_rmctl = shell("rmctl list --fields hostname,state --format csv", env)
    assert via_script.code == via_rmctl.code == 0, via_rmctl.err
    assert via_script.out == via_rmctl.out == "hostname,state\nh1,idle\n"


def test_errors_are_one_line_without_traceback(server):
    env = subprocess_env(RM_ENDPOINT=server.url)
    result = shell("./client.py get no-such-host", env)
    assert result.code == 4
    assert result.err == "client.py: GET /machines/no-such-host: 404 no machine 'no-such-host'\n"
    result = shell("./client.py get no-such-host --debug", env)
    assert result.code == 4 and "Traceback" in result.err


def test_client_py_runs_with_the_checkouts_venv_when_its_python_lacks_requests(server, tmp_path):
    # ./client.py runs the first python3 on PATH, often the system's without requests: `python -S` is one.
    env = subprocess_env(RM_ENDPOINT=server.url)
    assert subprocess.run([sys.executable, "-S", "-c", "import requests"], capture_output=True).returncode == 1
    listed = subprocess.run([sys.executable, "-S", "client.py", "list", "--format", "json"], cwd=PACKAGE_DIR,
                            env=env, capture_output=True, text=True, timeout=60)
    assert (listed.returncode, listed.stdout) == (0, "[]\n"), listed.stderr
    # Without a .venv beside the package (no make install), it says what to do, in one line.
    copy = tmp_path / "checkout" / "resource_manager"
    shutil.copytree(PACKAGE_DIR, copy, ignore=shutil.ignore_patterns(".build", "__pycache__"))
    bare = subprocess.run([sys.executable, "-S", "client.py", "list"], cwd=copy, env=env, capture_output=True,
                          text=True, timeout=60)
    assert bare.returncode == 1 and bare.stdout == ""
    assert bare.stderr.count("\n") == 1 and "lacks the Python package(s) requests, prettytable" in bare.stderr
    assert f"Run `make install` in {copy.parent}" in bare.stderr
