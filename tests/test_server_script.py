"""./server.py (what `make run` runs): embedded database, dev account, clean stop."""

import os
import signal
import subprocess
import sys
import time

import psutil
import requests

from .support import free_port
from .test_localdb import alive

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def wait_until_up(url, process, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"server.py exited early ({process.returncode}):\n{process.stdout.read()}")
        try:
            return requests.get(url + "/healthz", timeout=2)
        except requests.ConnectionError:
            time.sleep(0.2)
        except requests.Timeout:
            # The port is held (listening) while the embedded database starts (initdb on a fresh
            # data directory, a few seconds on a busy machine): the request waits, then we ask again.
            pass
    raise AssertionError("server.py did not come up")


def localdb_children(pid):
    out = subprocess.run(["ps", "-o", "pid=,args=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(line.split()[0]) for line in out.splitlines() if "rm-localdb" in line]


def descendants(pid):
    return [p.pid for p in psutil.Process(pid).children(recursive=True)]


def test_server_script_serves_with_dev_account_and_stops_everything(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RM_") and k != "MONGO_URI"}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep)
                                  if p != os.path.dirname(sys.executable))  # as after `make run`
    process = subprocess.Popen(
        [sys.executable, "server.py", "--dev-account", "--port", str(port), "--data-dir", str(tmp_path)],
        cwd=os.path.join(ROOT, "resource_manager"), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        assert wait_until_up(url, process).json()["database"] == "up"
        created = requests.post(url + "/machines", json={"hostname": "h1", "state": "idle"},
                                auth=("admin", "admin"), timeout=10)
        assert created.status_code == 201
        children = localdb_children(process.pid)
        assert len(children) == 1
        everything = descendants(process.pid)  # FerretDB, PostgreSQL and its backends
        assert len(everything) >= 3
    finally:
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=30)
    assert process.returncode == 0
    assert "DEVELOPMENT ACCOUNT" in output and "admin" in output
    # Where the CLI is (make run installs it in .venv/bin, on nobody's PATH), and that it runs from there.
    rmctl = os.path.join(os.path.dirname(sys.executable), "rmctl")
    assert f"the CLI: {rmctl} (not on PATH" in output, output
    assert subprocess.run([rmctl, "--version"], capture_output=True, text=True, timeout=30).returncode == 0
    assert os.path.exists(tmp_path / "users.json")
    assert not alive(children[0])
    assert not any(alive(pid) for pid in everything)


def test_rm_server_help_names_rm_server():
    rm_server = os.path.join(os.path.dirname(sys.executable), "rm-server")
    shown = subprocess.run([rm_server, "--help"], capture_output=True, text=True, timeout=30)
    assert shown.returncode == 0 and shown.stdout.startswith("usage: rm-server "), shown.stdout
    script = subprocess.run([sys.executable, "server.py", "--help"], cwd=os.path.join(ROOT, "resource_manager"),
                            capture_output=True, text=True, timeout=30)
    assert script.returncode == 0 and script.stdout.startswith("usage: server.py "), script.stdout
