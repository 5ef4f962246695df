"""The README's examples of each interface run as they stand: curl, rmctl and the library, against a live server.

The blocks are read from README.md; only the address of `make run` (127.0.0.1:5000) becomes the test
server's. The account is admin/admin, the one `make run` creates and the README uses.
"""

import os
import re
import subprocess
import sys

import pytest

from .cli_helpers import ROOT, shell, subprocess_env
from .support import write_users_file

MAKE_RUN = "http://127.0.0.1:5000"


@pytest.fixture(scope="module")
def users_file(tmp_path_factory):
    """The test accounts plus admin/admin."""
    return write_users_file(str(tmp_path_factory.mktemp("users") / "users.json"), legacy_admin=True)


def blocks(language):
    with open(f"{ROOT}/README.md", encoding="utf-8") as fh:
        return re.findall(rf"```{language}\n(.*?)```", fh.read(), re.S)


def block(language, first_word):
    found = [b for b in blocks(language) if b.split()[0] == first_word]
    assert len(found) == 1, f"README: one {language} block starting with {first_word!r} expected, found {len(found)}"
    return found[0]


def test_the_curl_example(server):
    script = "set -e\n" + block("sh", "curl").replace(MAKE_RUN, server.url)
    result = shell(script, subprocess_env(), cwd=ROOT)
    assert result.code == 0, result.err
    assert '"status": "ok"' in result.out.replace('":"', '": "')  # /healthz, the last line
    machine = server.db.machines.find_one({"hostname": "a-15-r.qa1.example.com"})
    assert machine["state"] == "idle" and machine["tags"] == {"cpucores": 8}
    reservation = server.db.reservations.find_one({"job_id": "build-42"})
    assert reservation["state"] == "released" and reservation["hostnames"] == ["a-15-r.qa1.example.com"]
    assert reservation["lease_seconds"] == 7200


def test_the_rmctl_example(server):
    script = "set -e\n" + block("sh", "rmctl")
    result = shell(script, subprocess_env(RM_ENDPOINT=server.url), cwd=ROOT)
    assert result.code == 0, result.err
    assert "a-16-r.qa1.example.com\n" in result.out  # what reserve --format plain printed
    reservation = server.db.reservations.find_one({"job_id": "build-43"})
    assert reservation["state"] == "released" and reservation["lease_seconds"] == 7200
    assert server.db.machines.find_one({"hostname": "a-16-r.qa1.example.com"})["state"] == "idle"


def test_the_ci_example(server):
    assert server.session(("admin", "admin")).post(
        "/machines", json={"hostname": "ci-1.qa1.example.com", "state": "idle"}).status_code == 201
    script = "set -e\n" + block("bash", "rmctl")
    result = shell(script, subprocess_env(RM_ENDPOINT=server.url), cwd=ROOT)
    assert result.code == 0, result.err
    reservation = server.db.reservations.find_one({"job_id": "build-45"})
    assert result.out == f"testing on {reservation['hostnames'][0]}\n"  # the command saw its machine
    assert reservation["state"] == "released" and reservation["heartbeat_seconds"] == 30
    assert server.db.machines.find_one({"hostname": reservation["hostnames"][0]})["state"] == "idle"


def test_the_library_example(server):
    code = block("python", "from").replace(MAKE_RUN, server.url)
    proc = subprocess.run([sys.executable, "-c", code], env=subprocess_env(), cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("['a-17-r.qa1.example.com'] 20")  # the hostnames, then when the lease ends
    assert server.db.reservations.find_one({"job_id": "build-44"})["state"] == "released"


def test_the_readme_is_short_and_its_links_lead_somewhere():
    with open(f"{ROOT}/README.md", encoding="utf-8") as fh:
        text = fh.read()
    assert len(text.splitlines()) <= 200
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text):
        if "://" not in target:
            assert os.path.exists(os.path.join(ROOT, target)), f"README links to {target}, which does not exist"
