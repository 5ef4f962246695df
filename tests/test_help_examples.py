"""The examples of `rmctl run --help` and `rmctl reserve --help` run exactly as printed.

Read from the help itself (a subprocess, as a user sees it), run by a shell with the credentials a CI
job has: RM_ENDPOINT and a token of scope `reserve`. The programs the examples start (./deploy.sh,
ssh, pytest...) are stand-ins that print what they were given; everything of ours is real.
"""

import os
import stat

import pytest

from .cli_helpers import shell, subprocess_env

FLEET = [{"hostname": f"arm-{i}", "state": "idle", "tags": {"arch": "aarch64", "cpucores": 8}} for i in range(4)]
STAND_INS = {"ci/test-on-hosts.sh": "test-on-hosts", "deploy.sh": "deploy", "test.sh": "test",
             "bin/ssh": "ssh", "bin/pytest": "pytest"}


def examples(command, env):
    """Return the example lines of `rmctl COMMAND --help`, as printed."""
    result = shell(f"rmctl {command} --help", env)
    assert result.code == 0, result.err
    text = result.out.split("\nexamples:\n", 1)[1]
    return [line.strip() for line in text.splitlines() if line.startswith("  ")]


@pytest.fixture
def ci_job(server, operator, tmp_path):
    """(environment, working directory) of a CI job: a reserve token, stand-in programs; four idle machines."""
    assert operator.post("/machines", json=FLEET).status_code == 201
    token = operator.post("/tokens", json={"scope": "reserve", "description": "ci"}).json()["token"]
    for path, name in STAND_INS.items():
        target = tmp_path / path
        target.parent.mkdir(exist_ok=True)
        target.write_text(f'#!/bin/sh\necho "{name} $* on $RM_HOSTS"\n')
        target.chmod(target.stat().st_mode | stat.S_IXUSR)
    env = subprocess_env(RM_ENDPOINT=server.url, RM_TOKEN=token, BUILD_TAG="build-7")
    env["PATH"] = f"{tmp_path / 'bin'}{os.pathsep}{env['PATH']}"
    return env, tmp_path


def test_every_example_of_rmctl_run_runs_as_printed(server, ci_job):
    env, cwd = ci_job
    lines = examples("run", env)
    assert len(lines) == 6
    result = shell("set -e\n" + "\n".join(lines), env, cwd=cwd)
    assert result.code == 0, result.err
    out = result.out.splitlines()
    assert [len(line.split(" on ", 1)[1].split()) for line in out[:5]] == [2, 1, 4, 2, 2]  # machines each saw
    assert out[0].startswith("test-on-hosts  on ") and out[1].startswith("ssh arm-")
    assert out[1].endswith(" make check on " + out[1].split()[1]) and out[2].startswith("pytest tests/system on ")
    assert out[3].split(" on ")[1] == out[4].split(" on ")[1]  # two commands, one reservation's machines
    assert '"released"' in "\n".join(out[5:])  # rmctl release "$RES", its answer (JSON in a pipe)
    held = list(server.db.reservations.find({"state": {"$nin": ["released"]}}))
    assert held == [] and server.db.machines.count_documents({"state": "idle"}) == 4


def test_every_example_of_rmctl_reserve_runs_as_printed(server, ci_job):
    env, cwd = ci_job
    lines = examples("reserve", env)
    assert len(lines) == 6
    for line in lines:
        result = shell("set -e\n" + line, env, cwd=cwd)
        assert result.code == 0, (line, result.err)
        for res in server.db.reservations.find({"state": "active"}):  # each example on the whole fleet
            assert shell(f"rmctl release {res['_id']}", env).code == 0
    made = {(r["job_id"], r["count"], r.get("heartbeat_seconds")) for r in server.db.reservations.find()}
    assert made == {("build-42", 2, None), (None, 4, None), ("build-7", 2, None), (None, 2, 900)}
