"""Log lines a client cannot forge or fill with secrets: CR/LF escaped, tokens in URLs redacted.

A `%0d%0a` in an item URL used to reach the app's own lines that print the path (408, 500, a
value refused by the encoder) as a real line break, so a client could write a line of its choice
(`... CRITICAL ... admin password changed`) into the text log. A token in `?access_token=` was
refused, but the access log kept the URL with its secret. Both are handled where every log record
passes (api/requestid.py): checked here in the text and JSON formats, for our lines, werkzeug's
access lines (./server.py, the tests' servers) and gunicorn's (as deployed).
"""

import base64
import io
import json
import logging
import re

import bson.errors
import pytest
import requests

from resource_manager.api import requestid

from .deployed import Gunicorn
from .support import ADMIN, LiveServer
from .test_slow_clients import BASIC, start_request, status_of

FORGED = "2026-01-01 00:00:00,000 CRITICAL resource_manager.api.auth [-]: admin password changed"
PATH = "/test-only/x%0d%0a" + FORGED.replace(" ", "%20")  # as a client sends it: the server decodes it
TOKEN = "rm_0123456789abcdef_" + "S3cr3tS3cr3tS3cr3tS3cr3tS3cr3tS3cr3tS3cr3t"
SECRET = TOKEN[20:]
LINE_START = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ ")


def _routes(live):
    def bug(rest):
        return {}["a bug of ours"]

    def unstorable(rest):
        raise bson.errors.InvalidDocument("key 'a.b' must not contain '.'")

    def accept(rest):
        return {"ok": True}

    live.app.add_url_rule("/test-only/<rest>", "bug", bug)
    live.app.add_url_rule("/test-only-unstorable/<rest>", "unstorable", unstorable)
    live.app.add_url_rule("/test-only/<rest>", "accept", accept, methods=["POST"])


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_a_crlf_in_the_path_never_makes_a_line_of_its_own(overrides, log_format):
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    text_format = logging.Formatter(requestid.TEXT_FORMAT)
    handler.setFormatter(requestid.JsonFormatter() if log_format == "json" else text_format)
    root = logging.getLogger()
    root.addHandler(handler)
    level, root.level = root.level, logging.INFO
    live = None
    try:
        live = LiveServer({**overrides, "LOG_FORMAT": log_format, "BODY_TIMEOUT": 1})
        _routes(live)
        with live.session(ADMIN) as admin:
            assert admin.get(PATH).status_code == 500
            assert admin.get(PATH.replace("/test-only/", "/test-only-unstorable/")).status_code == 400
        slow = start_request(live.url, "POST", PATH, headers={"Authorization": "Basic " + _basic(ADMIN)})
        assert status_of(slow) == 408
        slow.close()
    finally:
        root.removeHandler(handler)
        root.level = level
        if live is not None:
            live.stop()
    text = stream.getvalue()
    lines = text.splitlines()
    messages = [json.loads(line)["message"] for line in lines] if log_format == "json" else lines
    # The three lines that print the path: 500, the encoder's refusal, 408. Each holds it escaped, whole.
    escaped = "/x\\r\\n" + FORGED
    for what in ("unhandled error on GET /test-only", "value refused by the BSON encoder on GET",
                 ": body not received within 1 s"):
        assert any(what in message and escaped in message for message in messages), (what, text[-3000:])
    if log_format == "json":
        assert not any(message.startswith(FORGED[:20]) for message in messages)
    else:
        assert not any(line.startswith(FORGED[:20]) for line in lines), text[-3000:]
        # Every line is a line of ours, or a line of the 500's traceback (indented, or its header and exception).
        for line in lines:
            assert LINE_START.match(line) or line.startswith(("Traceback", "  ", "KeyError")), line


def _basic(auth):
    return base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()


def test_safe_text_escapes_every_control_character_and_redacts_tokens():
    assert requestid.safe_text("a\r\nb\tc\x00d\x1b[31m\x7f\x85\u2028\u2029") == \
        "a\\r\\nb\\tc\\x00d\\x1b[31m\\x7f\\x85\\u2028\\u2029"
    assert requestid.safe_text(f"GET /machines?x=1&access_token={SECRET}&y=2 HTTP/1.1") == \
        "GET /machines?x=1&access_token=[redacted]&y=2 HTTP/1.1"
    assert requestid.safe_text(f"/m?ACCESS%5FTOKEN={SECRET}") == "/m?ACCESS%5FTOKEN=[redacted]"
    assert requestid.safe_text(f"Referer: https://rm/?t={TOKEN}") == \
        "Referer: https://rm/?t=rm_0123456789abcdef_[redacted]"  # the id stays: it names the token
    assert requestid.safe_text("é, ü, 日本, /machines/h1?page=2") == "é, ü, 日本, /machines/h1?page=2"


def test_werkzeugs_access_line_has_no_token_secret(server, anon):
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter(requestid.TEXT_FORMAT))
    logging.getLogger().addHandler(handler)
    try:
        assert anon.get(f"/machines?access_token={TOKEN}").status_code in (200, 400, 401)
        assert anon.get("/machines", params={"token": TOKEN}).status_code in (200, 400)
    finally:
        logging.getLogger().removeHandler(handler)
    text = stream.getvalue()
    assert "GET /machines?access_token=[redacted] HTTP/1.1" in text, text
    assert SECRET not in text


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_gunicorns_access_log_has_no_token_secret_and_no_raw_crlf(localdb, dbname, users_file, tmp_path,
                                                                   log_format):
    log_path = tmp_path / "gunicorn.log"
    server = Gunicorn(localdb.uri, dbname, users_file, str(log_path), workers=1, threads=4,
                      env={"RM_LOG_FORMAT": log_format, "RM_BODY_TIMEOUT": "1"})
    server.env["RM_ACCESS_LOG"] = "-"  # Gunicorn() sends it to /dev/null
    with server:
        assert requests.get(f"{server.url}/machines?access_token={TOKEN}", timeout=10).status_code in (200, 400, 401)
        assert requests.get(f"{server.url}/machines", headers={"Referer": f"https://rm/?t={TOKEN}"},
                            timeout=10).status_code == 200
        # The item route takes any name, CR/LF included; POST there reads a body (Eve's method override).
        slow = start_request(server.url, "POST", "/machines/x%0d%0a" + FORGED.replace(" ", "%20"),
                             headers={"Authorization": BASIC})
        assert status_of(slow) == 408
        slow.close()
    text = log_path.read_text()
    assert SECRET not in text
    assert "access_token=[redacted]" in text and "rm_0123456789abcdef_[redacted]" in text
    lines = text.splitlines()
    assert not any(line.startswith(FORGED[:20]) for line in lines), text[-3000:]
    messages = [json.loads(line)["message"] if line.startswith("{") else line for line in lines]
    assert any("body not received within 1 s" in m and "x\\r\\n" + FORGED in m for m in messages), text[-3000:]
