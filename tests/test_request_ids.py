"""Request ids: X-Request-Id on every answer, in every error body and on every log line of the request."""

import io
import json
import logging
import re
import socket

import pymongo.errors
import pytest
import requests

from resource_manager.api.config import SettingsError, from_env, parse

from .deployed import Gunicorn
from .support import LiveServer

NEW_ID = re.compile(r"[0-9a-f]{32}\Z")


def _routes(server):
    def bug():
        return {}["a bug of ours"]

    def away():
        raise pymongo.errors.AutoReconnect("connection closed")

    def chatty():
        logging.getLogger("resource_manager.test_only").warning("a line of this request")
        return {"ok": True}

    server.app.add_url_rule("/test-only/bug", view_func=bug)
    server.app.add_url_rule("/test-only/away", view_func=away)
    server.app.add_url_rule("/test-only/chatty", view_func=chatty)


@pytest.mark.parametrize("sent", ["a", "ci-build.42:step_3", "A" * 128, "0123456789abcdef" * 8])
def test_a_sane_id_is_echoed(anon, sent):
    response = anon.get("/machines", headers={"X-Request-Id": sent})
    assert response.status_code == 200
    assert response.headers["X-Request-Id"] == sent


@pytest.mark.parametrize("sent", ["", "A" * 129, "has space", "slash/id", "quote\"id", "semi;colon", "é-accent",
                                  "tab\tid"])
def test_an_insane_id_is_replaced_by_a_new_one(anon, sent):
    response = anon.get("/machines", headers={"X-Request-Id": sent})
    assert response.status_code == 200
    assert NEW_ID.match(response.headers["X-Request-Id"])


def test_without_an_id_each_answer_gets_a_new_one(anon):
    ids = {anon.get("/machines").headers["X-Request-Id"] for _ in range(5)}
    assert len(ids) == 5 and all(NEW_ID.match(i) for i in ids)


@pytest.mark.parametrize("value", [b"abc\r\n evil", b"abc\r\n\tX-Injected: 1"])
def test_an_id_with_cr_or_lf_is_replaced(server, value):
    # requests refuses to send CR/LF in a header; a raw socket does, as a folded header line (the
    # server hands the app the value with its CR/LF). A bare CR ends the line in the server's parser.
    host, port = server.url.rsplit("/", 1)[1].split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"GET /machines HTTP/1.1\r\nHost: x\r\nX-Request-Id: " + value + b"\r\nConnection: close\r\n\r\n")
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
    head = raw.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    assert head[0].split(" ")[1] == "200"
    ids = [line.split(":", 1)[1].strip() for line in head if line.lower().startswith("x-request-id:")]
    assert len(ids) == 1 and NEW_ID.match(ids[0])
    assert not any(line.lower().startswith("x-injected") for line in head)


def _assert_error_carries(response, status, rid):
    assert response.status_code == status
    assert response.headers["X-Request-Id"] == rid
    assert response.json()["_status"] == "ERR"
    assert response.json()["_error"]["code"] == status
    assert response.json()["_error"]["request_id"] == rid


@pytest.mark.own_server  # adds routes to its app
def test_error_answers_carry_the_id_in_header_and_body(server, anon, admin):
    _routes(server)
    cases = [
        (anon.get, "/nowhere", {}, 404),
        (anon.post, "/machines", {"json": {"name": "m1"}}, 401),
        (anon.delete, "/healthz", {}, 405),
        (admin.post, "/machines", {"data": "{not json", "headers": {"Content-Type": "application/json"}}, 400),
        (admin.post, "/machines", {"data": "x", "headers": {"Content-Type": "text/plain"}}, 415),
        (admin.post, "/machines", {"json": {"no_such_field": 1}}, 422),  # Eve's own 422 body
        (anon.get, "/test-only/bug", {}, 500),
        (anon.get, "/test-only/away", {}, 503),
    ]
    for i, (call, path, kwargs, status) in enumerate(cases):
        rid = f"err-case-{i}"
        headers = {**kwargs.pop("headers", {}), "X-Request-Id": rid}
        _assert_error_carries(call(path, headers=headers, **kwargs), status, rid)
        # Without a sane id of the caller's, the body names the new one the header carries.
        response = call(path, headers={**headers, "X-Request-Id": "bad id"}, **kwargs)
        assert response.status_code == status
        assert NEW_ID.match(response.headers["X-Request-Id"])
        assert response.json()["_error"]["request_id"] == response.headers["X-Request-Id"]


def test_an_eve_patch_422_carries_the_id(server, admin):
    created = admin.post("/machines", json={"hostname": "m-422", "state": "idle"})
    assert created.status_code == 201
    etag = admin.get(f"/machines/{created.json()['_id']}").json()["_etag"]
    response = admin.patch(f"/machines/{created.json()['_id']}", json={"no_such_field": 1},
                           headers={"If-Match": etag, "X-Request-Id": "patch-422"})
    _assert_error_carries(response, 422, "patch-422")
    assert response.json()["_issues"]


@pytest.mark.own_server  # adds routes to its app
def test_every_log_line_of_a_request_carries_its_id(server, anon, caplog):
    _routes(server)
    with caplog.at_level(logging.INFO):
        chatty = anon.get("/test-only/chatty", headers={"X-Request-Id": "log-chatty"})
        bug = anon.get("/test-only/bug", headers={"X-Request-Id": "log-bug"})
        unnamed = anon.get("/test-only/bug")
    assert (chatty.status_code, bug.status_code, unnamed.status_code) == (200, 500, 500)
    lines = {r.request_id: r for r in caplog.records if r.name.startswith("resource_manager")}
    assert lines["log-chatty"].getMessage() == "a line of this request"
    assert "unhandled error" in lines["log-bug"].getMessage() and lines["log-bug"].exc_info[0] is KeyError
    new_id = unnamed.headers["X-Request-Id"]
    assert NEW_ID.match(new_id) and "unhandled error" in lines[new_id].getMessage()
    # Outside a request the id is "-".
    logging.getLogger("resource_manager.test_only").warning("outside")
    assert caplog.records[-1].request_id == "-"


def test_json_log_lines_parse_with_the_request_id_and_traceback(overrides):
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    root = logging.getLogger()
    root.addHandler(handler)
    live = None
    try:
        live = LiveServer({**overrides, "LOG_FORMAT": "json"})
        _routes(live)
        anon = live.session()
        assert anon.get("/test-only/chatty", headers={"X-Request-Id": "json-chatty"}).status_code == 200
        assert anon.get("/test-only/bug", headers={"X-Request-Id": "json-bug"}).status_code == 500
    finally:
        root.removeHandler(handler)
        if live is not None:
            live.stop()
    entries = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert entries and all({"time", "level", "logger", "message", "request_id"} <= set(e) for e in entries)
    by_id = {e["request_id"]: e for e in entries if e["logger"].startswith("resource_manager")}
    assert by_id["json-chatty"]["level"] == "WARNING"
    assert by_id["json-chatty"]["message"] == "a line of this request"
    assert "traceback" not in by_id["json-chatty"]
    assert by_id["json-bug"]["level"] == "ERROR"
    assert "KeyError" in by_id["json-bug"]["traceback"]
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\Z", by_id["json-bug"]["time"])


def test_the_log_format_setting_is_read_and_checked():
    assert parse(from_env({"RM_LOG_FORMAT": "json"})) == {"LOG_FORMAT": "json"}
    with pytest.raises(SettingsError, match="RM_LOG_FORMAT"):
        parse(from_env({"RM_LOG_FORMAT": "xml"}))


def test_under_gunicorn_json_lines_carry_the_id_and_the_access_line_too(localdb, dbname, users_file, tmp_path):
    log_path = tmp_path / "gunicorn.log"
    server = Gunicorn(localdb.uri, dbname, users_file, str(log_path), workers=1, threads=2,
                      env={"RM_LOG_FORMAT": "json"})
    server.env["RM_ACCESS_LOG"] = "-"  # Gunicorn() sends it to /dev/null
    with server:
        ok = requests.get(server.url + "/machines", headers={"X-Request-Id": "gunicorn-ok"}, timeout=10)
        refused = requests.post(server.url + "/machines", json={}, headers={"X-Request-Id": "gunicorn-401"},
                                timeout=10)
        assert (ok.status_code, refused.status_code) == (200, 401)
        assert refused.json()["_error"]["request_id"] == "gunicorn-401"
    entries = []
    for line in log_path.read_text().splitlines():
        if line.startswith("{"):
            entries.append(json.loads(line))
        else:  # only the master's own start and stop lines stay gunicorn's text
            assert re.match(r"\[[^]]+\] \[\d+\] \[[A-Z]+\] ", line), line
    access = {e["request_id"]: e for e in entries if e["logger"] == "gunicorn.access"}
    assert '"GET /machines HTTP/1.1" 200' in access["gunicorn-ok"]["message"]
    assert '"POST /machines HTTP/1.1" 401' in access["gunicorn-401"]["message"]
