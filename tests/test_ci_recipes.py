"""The CI recipes of docs/guides/ci.md, run as written against the live server with a token of scope `reserve`.

Each test reads its block from the page and stands in for the runner: GitHub Actions runs each
`run:` of a job in `bash -eo pipefail` with the job's `env`; GitLab runs a job's `script:` lines in
one shell with `-e`; Jenkins runs each `sh` step in its own `sh -xe`, stage after stage until one
fails, then the `post { always }` steps. `RM_ENDPOINT` is the test's server, `RM_TOKEN` the token.
The `./ci/*.sh` scripts stand for the user's: they record what they got and exit as told.
"""

import os
import re
import stat
import subprocess

import pytest
import yaml

from .cli_helpers import ROOT, subprocess_env

PAGE = os.path.join(ROOT, "docs", "guides", "ci.md")
SCRIPT = """#!/bin/sh
# Stands for the user's {name}: records what it got, then exits as $EXIT_{key} says (0 by default).
echo "{name} $RM_RESERVATION_ID $(echo $RM_HOSTS | tr ' ' ,) $(cat "$RM_HOSTS_FILE" | tr '\\n' ,)" >> "$STEPS_LOG"
exit "${{EXIT_{key}:-0}}"
"""


def block(language, first_line):
    """The fenced block of the page in `language` whose first line is `first_line`."""
    with open(PAGE, encoding="utf-8") as fh:
        text = fh.read()
    for found in re.finditer(rf"```{language}\n(.*?)```", text, re.S):
        if found.group(1).startswith(first_line):
            return found.group(1)
    raise AssertionError(f"no {language} block starting with {first_line!r} in {PAGE}")


@pytest.fixture
def lab(server, operator, tmp_path):
    """Two idle machines, a token of scope `reserve`, and a workspace with ./ci/*.sh; yields (workspace, env)."""
    for name in ("ci-1.lab.example.com", "ci-2.lab.example.com"):
        assert operator.post("/machines", json={"hostname": name, "state": "idle"}).status_code == 201
    made = operator.post("/tokens", json={"scope": "reserve", "description": "ci"})
    assert made.status_code == 201, made.text
    workspace = tmp_path / "workspace"
    (workspace / "ci").mkdir(parents=True)
    for name, key in (("test-on-hosts.sh", "TEST"), ("deploy.sh", "DEPLOY"), ("collect-logs.sh", "LOGS")):
        script = workspace / "ci" / name
        script.write_text(SCRIPT.format(name=name, key=key))
        script.chmod(script.stat().st_mode | stat.S_IXUSR)
    env = subprocess_env(RM_ENDPOINT=server.url, RM_TOKEN=made.json()["token"], STEPS_LOG=str(tmp_path / "steps"))
    return workspace, env


def steps(env):
    """What the ./ci scripts saw: [(script, reservation id, RM_HOSTS, RM_HOSTS_FILE lines)]."""
    try:
        with open(env["STEPS_LOG"], encoding="utf-8") as fh:
            return [tuple(line.split()) for line in fh]
    except FileNotFoundError:
        return []


HOSTS = "ci-1.lab.example.com,ci-2.lab.example.com"


def run(argv, workspace, env):
    return subprocess.run(argv, cwd=workspace, env=env, capture_output=True, text=True, timeout=120)


def test_the_first_example_of_the_page_runs(server, lab):
    workspace, env = lab
    line = block("sh", "rmctl run --count 2")
    done = run(["bash", "-eo", "pipefail", "-c", line], workspace, dict(env, BUILD_TAG="jenkins-lab-7"))
    assert done.returncode == 0, done.stderr
    (seen,) = steps(env)
    res = server.db.reservations.find_one({"job_id": "jenkins-lab-7"})
    assert seen == ("test-on-hosts.sh", res["_id"], HOSTS, HOSTS + ",") and res["state"] == "released"


@pytest.mark.parametrize("test_exit", [0, 3])
def test_github_actions(server, lab, test_exit):
    workspace, env = lab
    workflow = yaml.safe_load(block("yaml", "# .github/workflows/"))
    (job,) = workflow["jobs"].values()
    job_env = {k: str(v) for k, v in job["env"].items() if k != "RM_ENDPOINT"}  # the test's server instead
    assert job_env.pop("RM_TOKEN") == "${{ secrets.RM_TOKEN }}"
    runner = dict(env, **job_env, GITHUB_RUN_ID="9001", GITHUB_RUN_ATTEMPT="1", EXIT_TEST=str(test_exit))
    scripts = [step["run"] for step in job["steps"] if "run" in step]
    assert len(scripts) == 1 and [s["uses"] for s in job["steps"] if "uses" in s] == ["actions/checkout@v4"]
    done = run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", scripts[0]], workspace, runner)
    assert done.returncode == test_exit, done.stderr
    res = server.db.reservations.find_one({"job_id": "gh-9001-1"})
    assert steps(env) == [("test-on-hosts.sh", res["_id"], HOSTS, HOSTS + ",")]
    assert res["state"] == "released" and res["lease_seconds"] == 7200
    assert server.db.machines.count_documents({"state": "idle"}) == 2


@pytest.mark.parametrize("test_exit", [0, 3])
def test_gitlab_ci(server, lab, test_exit):
    workspace, env = lab
    (job,) = yaml.safe_load(block("yaml", "# .gitlab-ci.yml")).values()
    assert set(job["variables"]) == {"RM_ENDPOINT"}  # the test's server instead; RM_TOKEN as a CI/CD variable
    runner = dict(env, CI_JOB_ID="512", EXIT_TEST=str(test_exit))
    done = run(["bash", "-e", "-c", "\n".join(job["script"])], workspace, runner)
    assert done.returncode == test_exit, done.stderr
    res = server.db.reservations.find_one({"job_id": "gitlab-512"})
    assert steps(env) == [("test-on-hosts.sh", res["_id"], HOSTS, HOSTS + ",")]
    if test_exit == 0:
        assert res["state"] == "released" and server.db.machines.count_documents({"state": "idle"}) == 2
    else:  # kept 4 h for a post-mortem, no more heartbeats expected; the log says until when
        assert res["state"] == "active" and res["heartbeat_seconds"] is None
        assert abs((res["expires"] - res["_updated"]).total_seconds() - 4 * 3600) < 2
        assert f"rmctl: kept {HOSTS.replace(',', ' ')} (reservation {res['_id']}) until " in done.stderr


def jenkins_steps(pipeline):
    """The `sh` steps of a declarative pipeline: [(stage, script)] in order, and the post { always } scripts."""
    stages = [(name, re.findall(r"sh '([^']*)'", body)) for name, body in
              re.findall(r"stage\('([^']+)'\)\s*\{\s*steps\s*\{(.*?)\}\s*\}", pipeline, re.S)]
    always = re.search(r"post\s*\{\s*always\s*\{(.*?)\}\s*\}", pipeline, re.S).group(1)
    return stages, re.findall(r"sh '([^']*)'", always)


@pytest.mark.parametrize("test_exit", [0, 1])
def test_jenkins_two_stages_on_the_same_machines(server, lab, test_exit):
    workspace, env = lab
    pipeline = block("groovy", "// Jenkinsfile")
    assert "RM_TOKEN = credentials('rm-token')" in pipeline
    stages, always = jenkins_steps(pipeline)
    assert [name for name, _ in stages] == ["Reserve", "Deploy", "Test"] and len(always) == 2
    agent = dict(env, BUILD_TAG="jenkins-system-tests-31", EXIT_TEST=str(test_exit))
    failed = None
    for name, scripts in stages:
        for script in scripts:
            done = run(["sh", "-xe", "-c", script], workspace, agent)
            if done.returncode != 0:
                failed = (name, done.returncode)
                break
        if failed:
            break
        if name == "Deploy":  # between two steps nothing heartbeats: still held
            assert server.db.reservations.find_one({"job_id": agent["BUILD_TAG"]})["state"] == "active"
    for script in always:
        done = run(["sh", "-xe", "-c", script], workspace, agent)
        assert done.returncode == 0, done.stderr
    assert failed == (None if test_exit == 0 else ("Test", test_exit))
    res = server.db.reservations.find_one({"job_id": agent["BUILD_TAG"]})
    assert res["heartbeat_seconds"] == 600
    assert steps(env) == [(script, res["_id"], HOSTS, HOSTS + ",")
                          for script in ("deploy.sh", "test-on-hosts.sh", "collect-logs.sh")]
    assert res["state"] == "released" and server.db.machines.count_documents({"state": "idle"}) == 2


def test_several_commands_across_steps_as_the_page_writes_them(server, lab):
    workspace, env = lab
    script = block("sh", "rmctl reserve --count 2 --job-id")
    done = run(["bash", "-e", "-c", script], workspace, dict(env, BUILD_TAG="jenkins-steps-5"))
    assert done.returncode == 0, done.stderr
    res = server.db.reservations.find_one({"job_id": "jenkins-steps-5"})
    assert steps(env) == [(name, res["_id"], HOSTS, HOSTS + ",") for name in ("deploy.sh", "test-on-hosts.sh")]
    assert res["state"] == "released"
    one_step = block("sh", "rmctl run --count 2 --job-id \"$BUILD_TAG\" -- sh -c")
    done = run(["bash", "-e", "-c", one_step], workspace, dict(env, BUILD_TAG="jenkins-one-6"))
    assert done.returncode == 0, done.stderr
    assert [s[0] for s in steps(env)][-2:] == ["deploy.sh", "test-on-hosts.sh"]
