"""The Ansible inventory plugin (resource_manager.lab.inventory) with ansible-core, against the real server.

ansible-inventory and ansible run as subprocesses with no Ansible configuration: they find the
collection on sys.path, where the package installs it (`make install`). Requests are counted at
the server by a WSGI middleware.
"""

import json
import os
import re
import subprocess
import sys

import pytest

from .cli_helpers import ROOT, shell, subprocess_env
from .support import OPERATOR, seed_machines

BIN = os.path.dirname(sys.executable)
GUIDE = os.path.join(ROOT, "docs", "guides", "ansible.md")


class Counter:
    """WSGI middleware counting GET /machines requests."""

    def __init__(self):
        self.app, self.count = None, 0

    def __call__(self, environ, start_response):
        if environ["REQUEST_METHOD"] == "GET" and environ["PATH_INFO"] == "/machines":
            self.count += 1
        return self.app(environ, start_response)


@pytest.fixture
def ansible_env(server, tmp_path):
    """Environment for ansible commands: our endpoint, a home of their own, our Python for modules."""
    return subprocess_env(RM_ENDPOINT=server.url, RM_MAX_RETRIES="0", ANSIBLE_HOME=str(tmp_path / "ansible"),
                          ANSIBLE_LOCAL_TEMP=str(tmp_path / "ansible-tmp"), ANSIBLE_NOCOLOR="1",
                          ANSIBLE_PYTHON_INTERPRETER=sys.executable, ANSIBLE_HOST_KEY_CHECKING="False")


def listing(output):
    """Return ansible-inventory --list's JSON, its strings plain (2.19 marks ours {"__ansible_unsafe": text}:
    data from the server, never templated)."""
    def plain(value):
        if isinstance(value, dict):
            return value["__ansible_unsafe"] if set(value) == {"__ansible_unsafe"} else {
                k: plain(v) for k, v in value.items()}
        if isinstance(value, list):
            return [plain(v) for v in value]
        return value

    return plain(json.loads(output))


def inventory(tmp_path, text, name="ci.rm.yml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def run(env, *argv, timeout=120):
    return subprocess.run([os.path.join(BIN, argv[0]), *argv[1:]], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def reserve(operator, count, job):
    response = operator.post("/reservations", json={"count": count, "job_id": job})
    assert response.status_code == 201, response.text
    return response.json()


def test_a_reservations_machines_with_groups_and_hostvars_in_one_request(server, operator, ansible_env, tmp_path):
    for i, rack in enumerate(["r1", "r1", "r2", "r2"]):
        operator.post("/machines", json={"hostname": f"h{i}.lab", "state": "idle",
                                         "tags": {"rack": rack, "ip": f"192.0.2.{i + 1}"}})
    res = reserve(operator, 2, "build-42")
    path = inventory(tmp_path, """plugin: resource_manager.lab.inventory
reservation: "{{ lookup('env', 'RM_RESERVATION_ID') }}"
keyed_groups:
  - key: rm_tags.rack
    prefix: rack
groups:
  first: rm_hostname.startswith('h0')
compose:
  ansible_host: rm_tags.ip
""")
    counter = server.wrap(Counter())
    listed = run(dict(ansible_env, RM_RESERVATION_ID=res["_id"]), "ansible-inventory", "-i", path, "--list")
    assert listed.returncode == 0, listed.stderr
    assert counter.count == 1
    found = listing(listed.stdout)
    hosts = sorted(found["_meta"]["hostvars"])
    assert hosts == sorted(res["hostnames"])
    assert sorted(found["job_build_42"]["hosts"]) == hosts
    assert sorted(found["state_in_use"]["hosts"]) == hosts
    assert sorted(found["owner_operator"]["hosts"]) == hosts
    racks = {g for g in found if g.startswith("rack_")}
    assert racks and all(set(found[g]["hosts"]) <= set(hosts) for g in racks)
    variables = found["_meta"]["hostvars"][hosts[0]]
    assert variables["rm_state"] == "in_use" and variables["rm_job_id"] == "build-42"
    assert variables["rm_reservation"] == res["_id"] and variables["ansible_host"] == variables["rm_tags"]["ip"]
    assert variables["rm_tags"]["rack"] in ("r1", "r2") and re.fullmatch(r"[0-9a-f]{24}", variables["rm_id"])
    assert ("first" in found) == ("h0.lab" in hosts)


def test_ping_over_a_reservations_machines(server, operator, ansible_env, tmp_path):
    operator.post("/machines", json=[{"hostname": f"p{i}.lab", "state": "idle"} for i in range(3)])
    res = reserve(operator, 2, "ping-1")
    path = inventory(tmp_path, "plugin: resource_manager.lab.inventory\n"
                               "reservation: \"{{ lookup('env', 'RM_RESERVATION_ID') }}\"\n")
    pinged = run(dict(ansible_env, RM_RESERVATION_ID=res["_id"]), "ansible", "all", "-i", path, "-m", "ping",
                 "-c", "local")
    assert pinged.returncode == 0, pinged.stdout + pinged.stderr
    assert sorted(re.findall(r"^(\S+) \| SUCCESS", pinged.stdout, re.M)) == sorted(res["hostnames"])


def test_selection_by_job_owner_state_and_where_and_the_empty_reservation_refused(server, operator, ansible_env,
                                                                                   tmp_path):
    operator.post("/machines", json=[{"hostname": f"s{i}.lab", "state": "idle", "tags": {"arch": arch}}
                                     for i, arch in enumerate(["x86_64", "arm64", "x86_64"])])
    reserve(operator, 1, "job-a")
    path = inventory(tmp_path, "plugin: resource_manager.lab.inventory\nstate: [idle]\n"
                               "where: {\"tags.arch\": \"x86_64\"}\ngroup_by: [state]\n")
    listed = run(ansible_env, "ansible-inventory", "-i", path, "--list")
    found = listing(listed.stdout)
    idle_x86 = sorted(m["hostname"] for m in server.db.machines.find({"state": "idle", "tags.arch": "x86_64"}))
    assert sorted(found["_meta"]["hostvars"]) == idle_x86 and "owner_operator" not in found
    path = inventory(tmp_path, "plugin: resource_manager.lab.inventory\njob_id: job-a\nowner: operator\n", "job.rm.yml")
    found = listing(run(ansible_env, "ansible-inventory", "-i", path, "--list").stdout)
    assert list(found["_meta"]["hostvars"]) == [server.db.machines.find_one({"job_id": "job-a"})["hostname"]]
    # RM_RESERVATION_ID not set: an error, never the whole fleet.
    path = inventory(tmp_path, "plugin: resource_manager.lab.inventory\n"
                               "reservation: \"{{ lookup('env', 'RM_RESERVATION_ID') }}\"\n", "empty.rm.yml")
    refused = run(dict(ansible_env, ANSIBLE_INVENTORY_UNPARSED_FAILED="True"), "ansible-inventory", "-i", path,
                  "--list")
    assert refused.returncode != 0 and "reservation is empty" in refused.stderr


def test_the_inventory_cache_is_honoured(server, operator, ansible_env, tmp_path):
    operator.post("/machines", json={"hostname": "c1.lab", "state": "idle"})
    path = inventory(tmp_path, f"""plugin: resource_manager.lab.inventory
cache: true
cache_plugin: ansible.builtin.jsonfile
cache_connection: {tmp_path / 'cache'}
cache_timeout: 300
""")
    counter = server.wrap(Counter())
    for _ in range(3):
        listed = run(ansible_env, "ansible-inventory", "-i", path, "--list")
        assert list(listing(listed.stdout)["_meta"]["hostvars"]) == ["c1.lab"]
    assert counter.count == 1
    operator.post("/machines", json={"hostname": "c2.lab", "state": "idle"})
    flushed = run(ansible_env, "ansible-inventory", "-i", path, "--list", "--flush-cache")
    assert sorted(listing(flushed.stdout)["_meta"]["hostvars"]) == ["c1.lab", "c2.lab"]
    assert counter.count == 2


def test_ten_thousand_machines_in_one_request(server, ansible_env, tmp_path):
    # How long it takes is measured by `make bench` (bench/integrations.py), against Ansible's own cost of the
    # same inventory: a timed assertion here would measure the other programs of a busy host.
    hostnames = seed_machines(server.db, 10_000)
    path = inventory(tmp_path, "plugin: resource_manager.lab.inventory\n")
    counter = server.wrap(Counter())
    listed = run(ansible_env, "ansible-inventory", "-i", path, "--list", timeout=300)
    assert listed.returncode == 0, listed.stderr
    found = listing(listed.stdout)
    assert len(found["_meta"]["hostvars"]) == 10_000 and sorted(found["state_idle"]["hosts"]) == hostnames
    assert found["_meta"]["hostvars"][hostnames[7]]["rm_tags"]["rack"] == "r7"
    assert counter.count == 1


def guide_block(heading):
    with open(GUIDE, encoding="utf-8") as fh:
        text = fh.read()
    return re.search(r"```sh\n(.*?)```", text[text.index(heading):], re.S).group(1)


@pytest.fixture(scope="module")
def users_file(tmp_path_factory):
    """The test accounts plus admin/admin, the account `make run` creates and the guide uses."""
    from .support import write_users_file

    return write_users_file(str(tmp_path_factory.mktemp("users") / "users.json"), legacy_admin=True)


def test_the_guides_example_runs_as_written(server, ansible_env, tmp_path):
    operator_session = server.session(OPERATOR)
    operator_session.post("/machines", json=[{"hostname": f"g{i}.lab", "state": "idle", "tags": {"rack": "r7"}}
                                             for i in range(2)])
    result = shell("set -e\n" + guide_block("## Try it"), ansible_env, cwd=str(tmp_path))
    assert result.code == 0, result.out + result.err
    assert "@job_build_42:" in result.out and "@rack_r7:" in result.out and "@state_in_use:" in result.out
    assert len(re.findall(r"\| SUCCESS", result.out)) == 2
    assert server.db.machines.count_documents({"state": "idle"}) == 2  # released
