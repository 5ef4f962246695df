"""API tokens from the CLI and the library: the docs' CI job verbatim, precedence, nothing secret printed."""

import json
import re

import pytest

from resource_manager.clientlib.client import ResourceManagerClient
from resource_manager.clientlib.tokens import BearerAuth

from .cli_helpers import ROOT, run_cli, shell, subprocess_env
from .support import PASSWORDS, write_users_file

GUIDE = "docs/guides/tokens.md"  # the page the CI job block lives on
HEADING = "## A CI job's whole life with a token"


@pytest.fixture(scope="module")
def users_file(tmp_path_factory):
    """The test accounts plus admin/admin, the account `make run` creates and the docs use."""
    return write_users_file(str(tmp_path_factory.mktemp("users") / "users.json"), legacy_admin=True)


def guide_block():
    with open(f"{ROOT}/{GUIDE}", encoding="utf-8") as fh:
        text = fh.read()
    return re.search(r"```sh\n(.*?)```", text[text.index(HEADING):], re.S).group(1)


def test_the_guides_ci_job_runs_as_written(server):
    script = "set -e\n" + guide_block() + 'echo "token=$TOKEN"\n'
    result = shell(script, subprocess_env(RM_ENDPOINT=server.url), cwd=ROOT)
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    token = lines[-1].removeprefix("token=")
    assert token.startswith("rm_")
    names = [line for line in lines if re.fullmatch(r"ci-\d\.lab\.example\.com", line)]
    assert sorted(names) == ["ci-1.lab.example.com", "ci-2.lab.example.com"]  # what reserve printed
    assert "jenkins" in result.out and token not in "\n".join(lines[:-1]) + result.err  # listed, never printed again
    assert "shown this once" in result.err
    assert server.db.machines.count_documents({"state": "idle"}) == 2
    reservation = server.db.reservations.find_one({"job_id": "build-42"})
    assert reservation["user"] == "admin" and reservation["state"] == "released"
    assert server.db.api_tokens.count_documents({}) == 0  # revoked


def test_token_flag_environment_and_config_file(server, tmp_path):
    base = {"RM_ENDPOINT": server.url}
    made = run_cli("token", "create", "--scope", "read", "--expires", "1h", "--format", "json",
                   environ={**base, "RM_USERNAME": "reader", "RM_PASSWORD": PASSWORDS["reader"]})
    assert made.code == 0, made.err
    token = json.loads(made.out)["token"]
    listed = run_cli("token", "list", "--format", "json", environ={**base, "RM_TOKEN": token})
    assert listed.code == 0 and json.loads(listed.out)[0]["scope"] == "read" and token not in listed.out
    # The token wins over username and password wherever they come from; --token '' sends none.
    wrong = {**base, "RM_USERNAME": "admin", "RM_PASSWORD": "wrong", "RM_TOKEN": token}
    refused = run_cli("create", "hostname=h1", "state=idle", environ=wrong)
    assert refused.code == 4 and "403" in refused.err and "token" in refused.err and token[20:] not in refused.err
    basic = run_cli("--token", "", "create", "hostname=h1", "state=idle", environ=wrong)
    assert basic.code == 4 and "401" in basic.err
    config = tmp_path / "client.ini"
    config.write_text(f"[client]\ntoken = {token}\n")
    from_file = run_cli("token", "list", "--format", "json", environ={**base, "RM_CONFIG": str(config)})
    assert from_file.code == 0 and len(json.loads(from_file.out)) == 1
    # Revoked: the next request is refused, and the message points at the token without showing it.
    assert run_cli("token", "revoke", token, environ={**base, "RM_TOKEN": token}).code == 0
    dead = run_cli("--token", token, "list", environ=base)
    assert dead.code == 4 and "401" in dead.err and "check the token" in dead.err and token[20:] not in dead.err
    assert run_cli("token", "create", "--scope", "read", "--expires", "soon", environ=base).code == 2


def test_the_library_takes_a_token(server, operator):
    token = operator.post("/tokens", json={"scope": "write", "description": "lib"}).json()["token"]
    with ResourceManagerClient(endpoint=server.url, username="nobody", password="x", token=token) as rm:
        assert rm.username is None and rm.auth == BearerAuth(token)
        assert token[20:] not in repr(rm.auth) and token[3:19] in repr(rm.auth)
        rm.create({"hostname": "h1", "state": "idle"})
        assert [t["description"] for t in rm.tokens()] == ["lib"]
        rm.revoke_token(rm.tokens()[0]["_id"])
    assert server.db.machines.find_one({"hostname": "h1"}) is not None
    assert server.db.api_tokens.count_documents({}) == 0


def test_revoke_by_id_as_the_help_shows(server):
    # `rmctl token revoke 0123456789abcdef`: the id was taken for the --token credential (401, malformed).
    base = {"RM_ENDPOINT": server.url, "RM_USERNAME": "admin", "RM_PASSWORD": "admin"}
    made = run_cli("token", "create", "--scope", "read", "--format", "json", environ=base)
    assert made.code == 0, made.err
    token = json.loads(made.out)
    assert re.fullmatch(r"[0-9a-f]{16}", token["_id"])
    revoked = run_cli("token", "revoke", token["_id"], environ=base)
    assert revoked.code == 0, revoked.err
    assert revoked.err == f"revoked token {token['_id']}\n"
    assert server.db.api_tokens.count_documents({}) == 0
    # Also with the global option given before the command: each keeps its own value.
    again = run_cli("token", "create", "--scope", "read", "--format", "json", environ=base)
    second = json.loads(again.out)
    revoked = run_cli("--token", token["token"], "-u", "admin", "token", "revoke", second["_id"],
                      environ={**base, "RM_PASSWORD": "admin"})
    assert revoked.code == 4 and "401" in revoked.err  # the revoked first token is what authenticates
    assert run_cli("--token", "", "token", "revoke", second["_id"], environ=base).code == 0
    assert server.db.api_tokens.count_documents({}) == 0
