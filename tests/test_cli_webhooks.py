"""rmctl webhook create | list | delete | deliveries, and the client library's calls, over real HTTP."""

import json
import time

import pytest

from resource_manager.clientlib.client import ResourceManagerClient
from resource_manager.clientlib.errors import NotFound, ValidationError

from .cli_helpers import run_cli
from .support import PASSWORDS


@pytest.fixture
def overrides(overrides):
    return dict(overrides, WEBHOOK_ALLOW="127.0.0.1", WEBHOOK_RETRY_SECONDS=0.2)


def as_user(server, role):
    return {"RM_ENDPOINT": server.url, "RM_USERNAME": role, "RM_PASSWORD": PASSWORDS[role]}


def test_create_list_deliveries_redeliver_delete(server, httpserver):
    httpserver.expect_request("/hook", method="POST").respond_with_data("ok")
    admin = as_user(server, "admin")
    made = run_cli("webhook", "create", httpserver.url_for("/hook"), "--event", "machine.*", "--where",
                   '{"data.hostname": "h1"}', "--format", "json", environ=admin)
    assert made.code == 0, made.err
    hook = json.loads(made.out)
    assert hook["secret"].startswith("whsec_") and "shown this once" in made.err and hook["secret"] not in made.err
    listed = run_cli("webhook", "list", "--format", "json", environ=admin)
    assert [h["_id"] for h in json.loads(listed.out)] == [hook["_id"]] and "whsec_" not in listed.out
    assert run_cli("create", "hostname=h1", "state=idle", environ=admin).code == 0
    assert run_cli("create", "hostname=h2", "state=idle", environ=admin).code == 0  # not for this hook (where)
    deadline = time.monotonic() + 20
    while True:
        shown = json.loads(run_cli("webhook", "deliveries", hook["_id"], "--format", "json", environ=admin).out)
        if shown and shown[0]["state"] == "delivered" or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert [(d["type"], d["state"]) for d in shown] == [("machine.created", "delivered")]
    again = run_cli("webhook", "deliveries", hook["_id"], "--redeliver", shown[0]["_id"], environ=admin)
    assert again.code == 0 and "will be sent again" in again.err
    table = run_cli("webhook", "deliveries", hook["_id"], "--state", "delivered", "--format", "table", environ=admin)
    assert table.code == 0
    assert run_cli("webhook", "delete", hook["_id"], environ=admin).code == 0
    gone = run_cli("webhook", "delete", hook["_id"], environ=admin)
    assert gone.code == 4 and "404" in gone.err and len(gone.err.strip().splitlines()) == 1


def test_refusals_are_one_line_and_an_exit_code(server):
    url = "http://127.0.0.1:9/hook"
    operator = run_cli("webhook", "create", url, "--event", "*", environ=as_user(server, "operator"))
    assert operator.code == 4 and "403" in operator.err and len(operator.err.strip().splitlines()) == 1
    admin = as_user(server, "admin")
    bad_where = run_cli("webhook", "create", url, "--event", "*", "--where", "{nope", environ=admin)
    assert bad_where.code == 2 and "--where" in bad_where.err
    no_event = run_cli("webhook", "create", url, environ=admin)
    assert no_event.code == 2
    not_allowed = run_cli("webhook", "create", "http://10.0.0.1/hook", "--event", "*", environ=admin)
    assert not_allowed.code == 4 and "422" in not_allowed.err and "WEBHOOK_ALLOW" in not_allowed.err
    assert server.db.webhooks.count_documents({}) == 0


def test_the_library(server, httpserver):
    with ResourceManagerClient(endpoint=server.url, username="admin", password=PASSWORDS["admin"]) as rm:
        hook = rm.create_webhook(httpserver.url_for("/x"), ["reservation.*"], description="lib")
        assert [h["description"] for h in rm.webhooks()] == ["lib"] and "secret" not in rm.webhooks()[0]
        assert rm.webhook_deliveries(hook["_id"]) == []
        with pytest.raises(ValidationError) as refused:
            rm.create_webhook("http://169.254.169.254/", ["*"])
        assert "url" in refused.value.issues
        with pytest.raises(NotFound):
            rm.redeliver(hook["_id"], "nope")
        rm.delete_webhook(hook["_id"])
        with pytest.raises(NotFound):
            rm.delete_webhook(hook["_id"])
