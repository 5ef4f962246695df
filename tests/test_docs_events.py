"""docs/reference/events.md: its examples run as written against the real server and a real receiver."""

import itertools
import json
import os
import re
import threading
import time

import pytest

from .cli_helpers import ROOT, shell, subprocess_env
from .support import write_users_file

PAGE = os.path.join(ROOT, "docs", "reference", "events.md")


def block(heading, language):
    """Return the first ```language block after `heading` in the page."""
    with open(PAGE, encoding="utf-8") as fh:
        text = fh.read()
    return re.search(rf"```{language}\n(.*?)```", text[text.index(heading):], re.S).group(1)


@pytest.fixture(scope="module")
def users_file(tmp_path_factory):
    """The test accounts plus admin/admin, the account `make run` creates and the page uses."""
    return write_users_file(str(tmp_path_factory.mktemp("users") / "users.json"), legacy_admin=True)


@pytest.fixture
def admin(server):
    return server.session(("admin", "admin"))  # (this module's users file: admin's password is "admin")


@pytest.fixture
def overrides(overrides):
    return dict(overrides, WEBHOOK_ALLOW="127.0.0.1", WEBHOOK_RETRY_SECONDS=0.2)


def test_the_curl_example_follows_the_machines(server, admin):
    admin.post("/machines", json=[{"hostname": "c1", "state": "idle"}, {"hostname": "c2", "state": "idle"}])
    script = block("Follow the machines", "sh").replace("http://127.0.0.1:5000", server.url)
    result = shell("set -e\n" + script, subprocess_env(), cwd=ROOT)
    assert result.code == 0, result.err
    assert re.findall(r"^event: (\S+)$", result.out, re.M) == ["machine.created", "machine.created"]
    assert re.findall(r"^id: (\d+)$", result.out, re.M) == ["1", "2"]


def test_the_python_follower_resumes_across_streams(server, admin):
    namespace = {}
    exec(block("In Python", "python"), namespace)  # noqa: S102  (our own documentation's code)
    admin.post("/machines", json={"hostname": "p1", "state": "idle"})
    got = []

    def listen():
        got.extend(itertools.islice(namespace["follow"](server.url, 0), 3))

    reader = threading.Thread(target=listen, daemon=True)
    reader.start()
    admin.write("PATCH", "/machines/p1", json={"owner": "x"})
    admin.write("DELETE", "/machines/p1")
    reader.join(30)
    assert [(i, kind) for i, kind, _data in got] == [(1, "machine.created"), (2, "machine.updated"),
                                                      (3, "machine.deleted")]


def test_the_receivers_check_accepts_our_signature_and_nothing_else(server, admin, httpserver):
    namespace = {}
    exec(block("What a receiver gets", "python"), namespace)  # noqa: S102
    verify = namespace["verify"]
    httpserver.expect_request("/rm", method="POST").respond_with_data("ok")
    secret = admin.post("/webhooks", json={"url": httpserver.url_for("/rm"), "events": ["*"]}).json()["secret"]
    admin.post("/machines", json={"hostname": "v1", "state": "idle"})
    deadline = time.monotonic() + 20
    while not httpserver.log and time.monotonic() < deadline:
        time.sleep(0.1)
    sent, _response = httpserver.log[0]
    header, body = sent.headers["X-RM-Signature"], sent.get_data()
    assert verify(secret, header, body)
    assert not verify(secret, header, body.replace(b"v1", b"v2"))  # another body
    assert not verify("whsec_" + "0" * 48, header, body)  # another secret
    assert not verify(secret, header, body, tolerance=-1)  # too old: a replay
    assert not verify(secret, "garbage", body)


def test_the_shell_example_registers_lists_and_deletes_a_hook(server, httpserver):
    httpserver.expect_request("/hook", method="POST").respond_with_data("ok")
    env = subprocess_env(RM_ENDPOINT=server.url, HOOK_URL=httpserver.url_for("/hook"))
    result = shell("set -e\n" + block("From the shell", "sh"), env, cwd=ROOT)
    assert result.code == 0, result.err
    documents, text, decoder = [], result.out.strip(), json.JSONDecoder()
    while text:  # what each command printed: the machine created, then the deliveries
        document, end = decoder.raw_decode(text)
        documents.append(document)
        text = text[end:].strip()
    created, deliveries = documents
    assert created["hostname"] == "web-1"
    assert [(d["type"], d["state"]) for d in deliveries] == [("machine.created", "delivered")]
    assert "deleted webhook wh_" in result.err and "shown this once" in result.err
    assert server.db.webhooks.count_documents({}) == 0
    assert json.loads(httpserver.log[0][0].get_data())["data"]["reason"] == "racked"
