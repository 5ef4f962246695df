"""Webhooks against real receivers on 127.0.0.1 (pytest-httpserver): signed, retried, logged, refused where SSRF."""

import hashlib
import hmac
import json
import socket
import threading
import time

import pymongo
import pytest
import requests
from pytest_httpserver import HTTPServer
from werkzeug import Response

from resource_manager.api import egress, hookworker

from .support import ADMIN, PASSWORDS, LiveServer


@pytest.fixture
def overrides(overrides):
    # Receivers listen on 127.0.0.1: allowed here only. Retries come fast.
    return dict(overrides, WEBHOOK_ALLOW="127.0.0.1", WEBHOOK_RETRY_SECONDS=0.2, WEBHOOK_TIMEOUT=3,
                WEBHOOK_THREADS=2)


def hook(admin, url, events=("machine.*",), **extra):
    response = admin.post("/webhooks", json={"url": url, "events": list(events), **extra})
    assert response.status_code == 201, response.text
    return response.json()


def wait_deliveries(admin, hook_id, predicate, timeout=20):
    """Poll the delivery log (what an admin would read) until predicate(items) holds; return the items."""
    deadline = time.monotonic() + timeout
    while True:
        items = admin.get(f"/webhooks/{hook_id}/deliveries").json()["_items"]
        if predicate(items) or time.monotonic() > deadline:
            return items
        time.sleep(0.1)


def verify(secret, header, body, now, tolerance=300):
    """Check an X-RM-Signature as a receiver does (and refuse an old timestamp: a replay)."""
    parts = dict(item.split("=", 1) for item in header.split(","))
    expected = hmac.new(secret.encode(), f"{parts['t']}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, parts["v1"]) and abs(now - int(parts["t"])) <= tolerance


def test_signed_deliveries_retried_after_a_500_until_a_200(server, admin, httpserver):
    httpserver.expect_ordered_request("/hook", method="POST").respond_with_data("oops", status=500)
    httpserver.expect_ordered_request("/hook", method="POST").respond_with_data("ok", status=200)
    made = hook(admin, httpserver.url_for("/hook"), description="ci")
    assert made["secret"].startswith("whsec_") and made["events"] == ["machine.*"] and made["description"] == "ci"
    assert "secret" not in admin.get("/webhooks").json()["_items"][0]  # shown once
    assert admin.post("/machines", json={"hostname": "m1", "state": "idle"}).status_code == 201
    items = wait_deliveries(admin, made["_id"], lambda i: i and i[0]["state"] == "delivered")
    assert len(items) == 1
    delivery = items[0]
    assert (delivery["type"], delivery["attempts"], delivery["last_status"]) == ("machine.created", 2, 200)
    assert [entry["status"] for entry in delivery["log"]] == [500, 200]
    assert delivery["log"][0]["error"] == "HTTP 500"
    (first, _r1), (second, _r2) = httpserver.log
    assert first.get_data() == second.get_data()  # the same event, byte for byte
    body = json.loads(second.get_data())
    assert body["type"] == "machine.created" and body["data"]["hostname"] == "m1"
    assert body["id"] == delivery["event"]
    for sent in (first, second):
        assert verify(made["secret"], sent.headers["X-RM-Signature"], sent.get_data(), time.time())
        assert not verify("whsec_wrong", sent.headers["X-RM-Signature"], sent.get_data(), time.time())
        assert sent.headers["X-RM-Event"] == "machine.created"
        assert sent.headers["X-RM-Delivery"] == delivery["_id"]
        assert sent.headers["Content-Type"] == "application/json"
    # A replay a day later fails the receiver's check on the timestamp.
    assert not verify(made["secret"], second.headers["X-RM-Signature"], second.get_data(), time.time() + 86400)


def test_types_and_where_choose_the_events(server, admin, httpserver):
    httpserver.expect_request("/hook", method="POST").respond_with_data("ok")
    made = hook(admin, httpserver.url_for("/hook"), events=["machine.updated"],
                where={"data.changes.state.after": "needs_repair"})
    assert made["where"] == {"data.changes.state.after": "needs_repair"}
    admin.post("/machines", json=[{"hostname": "m1", "state": "idle"}, {"hostname": "m2", "state": "idle"}])
    admin.write("PATCH", "/machines/m1", json={"state": "needs_repair"})
    admin.write("PATCH", "/machines/m2", json={"owner": "x"})
    items = wait_deliveries(admin, made["_id"], lambda i: i and i[0]["state"] == "delivered")
    time.sleep(0.5)  # (a wrong delivery would be made by the same pass; give it one more)
    items = admin.get(f"/webhooks/{made['_id']}/deliveries").json()["_items"]
    assert [i["type"] for i in items] == ["machine.updated"]
    assert json.loads(httpserver.log[0][0].get_data())["data"]["hostname"] == "m1"


def test_the_delivery_log_redeliver_and_delete(server, admin, httpserver):
    httpserver.expect_request("/hook", method="POST").respond_with_data("ok")
    made = hook(admin, httpserver.url_for("/hook"))
    admin.post("/machines", json={"hostname": "m1", "state": "idle"})
    (delivery,) = wait_deliveries(admin, made["_id"], lambda i: i and i[0]["state"] == "delivered")
    again = admin.post(f"/webhooks/{made['_id']}/deliveries/{delivery['_id']}/redeliver")
    assert again.status_code == 202 and again.json()["state"] == "pending" and again.json()["attempts"] == 0
    wait_deliveries(admin, made["_id"], lambda i: i[0]["state"] == "delivered" and len(httpserver.log) == 2)
    assert len(httpserver.log) == 2
    assert admin.post(f"/webhooks/{made['_id']}/deliveries/nope/redeliver").status_code == 404
    assert admin.get(f"/webhooks/{made['_id']}/deliveries", params={"state": "lost"}).status_code == 400
    assert admin.get(f"/webhooks/{made['_id']}").json()["url"] == httpserver.url_for("/hook")
    assert admin.delete(f"/webhooks/{made['_id']}").status_code == 204
    assert admin.delete(f"/webhooks/{made['_id']}").status_code == 404
    assert admin.get(f"/webhooks/{made['_id']}/deliveries").status_code == 404
    assert server.db.webhook_deliveries.count_documents({}) == 0
    admin.post("/machines", json={"hostname": "m2", "state": "idle"})
    time.sleep(1)  # a worker pass or more
    assert len(httpserver.log) == 2


def test_redirects_are_refused_and_retried_until_they_fail_for_good(server, admin, httpserver):
    httpserver.expect_request("/hook", method="POST").respond_with_response(
        Response(status=302, headers={"Location": "http://169.254.169.254/latest/meta-data/"}))
    hookworker.worker(server.app).policy.attempts = 2
    made = hook(admin, httpserver.url_for("/hook"))
    admin.post("/machines", json={"hostname": "m1", "state": "idle"})
    (delivery,) = wait_deliveries(admin, made["_id"], lambda i: i and i[0]["state"] == "failed")
    assert delivery["attempts"] == 2 and delivery["last_status"] == 302
    assert delivery["last_error"].startswith("redirect refused (302 to http://169.254.169.254/")
    assert [r.path for r, _ in httpserver.log] == ["/hook", "/hook"]  # never followed


def test_only_admins_manage_webhooks(server, httpserver):
    url = httpserver.url_for("/hook")
    assert server.session().post("/webhooks", json={"url": url, "events": ["*"]}).status_code == 401
    operator = server.session(("operator", PASSWORDS["operator"]))
    assert operator.post("/webhooks", json={"url": url, "events": ["*"]}).status_code == 403
    assert operator.get("/webhooks").status_code == 403
    admin = server.session(ADMIN)
    token = admin.post("/tokens", json={"scope": "write"}).json()["token"]
    written = requests.post(server.url + "/webhooks", json={"url": url, "events": ["*"]},
                            headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert written.status_code == 403
    token = admin.post("/tokens", json={"scope": "admin"}).json()["token"]
    made = requests.post(server.url + "/webhooks", json={"url": url, "events": ["*"]},
                         headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert made.status_code == 201


def test_bad_bodies_are_422_and_store_nothing(server, admin, httpserver):
    url = httpserver.url_for("/hook")
    for body, field in (({"events": ["*"]}, "url"), ({"url": url}, "events"), ({"url": url, "events": []}, "events"),
                        ({"url": url, "events": ["machine"]}, "events"),
                        ({"url": url, "events": ["*"], "where": {"data.x": {"$regex": "a+"}}}, "where"),
                        ({"url": url, "events": ["*"], "where": {"$where": "1"}}, "where"),
                        ({"url": url, "events": ["*"], "secret": "mine"}, "secret"),
                        ({"url": "ftp://127.0.0.1/x", "events": ["*"]}, "url"),
                        ({"url": "http://u:p@127.0.0.1/x", "events": ["*"]}, "url")):
        response = admin.post("/webhooks", json=body)
        assert response.status_code == 422, body
        assert field in response.json()["_issues"], (body, response.json())
    assert server.db.webhooks.count_documents({}) == 0


@pytest.fixture
def default_allow(overrides, localdb):
    """A server with the default allow-list ("public")."""
    live = LiveServer({k: v for k, v in overrides.items() if not k.startswith("WEBHOOK_")})
    yield live
    live.stop()
    with pymongo.MongoClient(localdb.uri) as client:
        client.drop_database(overrides["MONGO_DBNAME"])


def test_ssrf_targets_are_refused_by_default(default_allow):
    admin = default_allow.session(ADMIN)
    for url in ("http://127.0.0.1:5000/machines", "http://localhost/x", "http://[::1]/x", "http://10.0.0.5/x",
                "http://192.168.1.1/x", "http://172.16.0.1/x", "http://169.254.169.254/latest/meta-data/",
                "http://[fe80::1]/x", "http://0.0.0.0/x", "http://[::ffff:127.0.0.1]/x", "http://100.64.0.1/x",
                "http://224.0.0.1/x", "http://2130706433/x", "http://does-not-resolve.invalid/x"):
        response = admin.post("/webhooks", json={"url": url, "events": ["*"]})
        assert response.status_code == 422, url
        assert "url" in response.json()["_issues"], url
    assert default_allow.db.webhooks.count_documents({}) == 0


def test_the_allow_list_entries():
    allow = egress.AllowList("public, 10.20.0.0/16, hooks.example.com, *.lab.example.com")
    assert allow.address_allowed("10.20.3.4") and not allow.address_allowed("10.21.0.1")
    assert allow.address_allowed("203.0.113.9") is False  # documentation range: not global
    assert allow.address_allowed("8.8.8.8") and not allow.address_allowed("127.0.0.1")
    assert allow.names("hooks.example.com") and allow.names("a.lab.example.com") and not allow.names("example.com")
    assert allow.address_allowed("10.9.9.9", named=True) and not allow.address_allowed("169.254.169.254", named=True)
    assert not egress.AllowList("127.0.0.1").address_allowed("8.8.8.8")
    with pytest.raises(ValueError):
        egress.AllowList("not a host!")


def test_dns_is_checked_when_sending_and_the_connection_goes_to_the_address_checked(server, admin, httpserver,
                                                                                     monkeypatch):
    httpserver.expect_request("/hook", method="POST").respond_with_data("ok")
    port = httpserver.port
    answers = {"first": "127.0.0.1"}
    real = socket.getaddrinfo

    def lab_dns(host, *args, **kwargs):
        # A resolver that answers differently each time (rebinding): first the allowed address, then another.
        if host == "hooks.test":
            address, answers["first"] = answers["first"], "10.1.2.3"
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", lab_dns)
    made = hook(admin, f"http://hooks.test:{port}/hook")  # checked at creation: 127.0.0.1
    answers["first"] = "127.0.0.1"  # and once more, at sending
    admin.post("/machines", json={"hostname": "m1", "state": "idle"})
    (delivery,) = wait_deliveries(admin, made["_id"], lambda i: i and i[0]["state"] in ("delivered", "failed"))
    assert delivery["state"] == "delivered"  # sent to 127.0.0.1, not to what the name resolved to next
    (received, _r), = httpserver.log
    assert received.headers["Host"] == f"hooks.test:{port}"
    # Now the name resolves to a private address: refused before any connection, retried, failed.
    hookworker.worker(server.app).policy.attempts = 1
    admin.post("/machines", json={"hostname": "m2", "state": "idle"})
    items = wait_deliveries(admin, made["_id"], lambda i: len(i) == 2 and i[0]["state"] == "failed")
    assert items[0]["last_error"] == ("refused: hooks.test resolves to 10.1.2.3, which WEBHOOK_ALLOW=127.0.0.1 "
                                      "does not allow")
    assert len(httpserver.log) == 1


def test_a_hung_receiver_never_slows_the_api(server, admin):
    hung = threading.Event()
    receiver = HTTPServer(host="127.0.0.1", port=0, threaded=True)
    receiver.expect_request("/hook").respond_with_handler(lambda _request: (hung.wait(20), Response("late"))[1])
    receiver.start()
    try:
        made = hook(admin, receiver.url_for("/hook"))
        admin.post("/machines", json=[{"hostname": f"m{i}", "state": "idle"} for i in range(4)])
        wait_deliveries(admin, made["_id"], lambda i: sum(d["state"] == "delivering" for d in i) == 2)
        # Both delivery threads of this process wait on the receiver: requests are answered as ever,
        # each far sooner than the receiver (it answers in 20 s, or when the delivery times out at 3 s).
        for i in range(20):
            assert admin.write("PATCH", f"/machines/m{i % 4}", json={"owner": f"o{i}"}, timeout=2).status_code == 200
            assert admin.get("/healthz", timeout=2).status_code == 200
    finally:
        hung.set()
        receiver.stop()
