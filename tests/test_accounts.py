"""Accounts and sessions (issue 13, findings 1-4): password rotation, the bad-password throttle,
revocable dashboard sessions, and a users file that goes bad while serving."""

import contextlib
import io
import json
import logging
import threading
import uuid

import pymongo
import pytest
import requests

from resource_manager.admin.users import main as users_main
from resource_manager.api import auth
from resource_manager.api.ratelimit import FailureLimiter

from .support import PASSWORDS, LiveServer, run_together
from .test_web import HTML, token

MACHINE = {"hostname": "h1", "state": "idle"}


@pytest.fixture
def users(tmp_path):
    """A users file of this test's own, to rotate and break."""
    path = str(tmp_path / "users.json")
    for role, password in PASSWORDS.items():
        auth.set_user(path, role, password, role)
    return path


def throttled_server(uri, users, dbname):
    """A server on `users`, refusing a key after 3 failures for 30 s (doubling)."""
    return LiveServer({"MONGO_URI": uri, "MONGO_DBNAME": dbname, "USERS_FILE": users,
                       "SECRET_KEY": "test-secret-key", "AUTH_MAX_FAILURES": 3, "AUTH_BACKOFF_BASE": 30})


@pytest.fixture(scope="module")
def _module_live(localdb, tmp_path_factory):
    """One throttled server for the tests that leave its users file alone, on a file of its own."""
    path = str(tmp_path_factory.mktemp("accounts") / "users.json")
    for role, password in PASSWORDS.items():
        auth.set_user(path, role, password, role)
    dbname = f"test_accounts_{uuid.uuid4().hex[:12]}"
    server = throttled_server(localdb.uri, path, dbname)
    yield server
    server.stop()
    with pymongo.MongoClient(localdb.uri) as client:
        client.drop_database(dbname)


@pytest.fixture
def live(request, localdb, _module_live):
    """The throttled server: its database empty and its throttle new at the start of the test.

    A test that rotates or breaks its users file (it asks for `users`) gets a server of its own on it.
    """
    if "users" not in request.fixturenames:
        _module_live.reset()
        yield _module_live
        _module_live.unwrap()
        return
    dbname = request.getfixturevalue("dbname")
    server = throttled_server(localdb.uri, request.getfixturevalue("users"), dbname)
    yield server
    server.stop()
    with pymongo.MongoClient(localdb.uri) as client:
        client.drop_database(dbname)


def post(live, auth_pair, hostname="h1", session=None):
    """POST a machine with HTTP Basic `auth_pair`, from `session` (keeping its cookies) or a fresh client."""
    with requests.Session() if session is None else contextlib.nullcontext(session) as s:
        return s.post(live.url + "/machines", json={"hostname": hostname, "state": "idle"}, auth=auth_pair,
                      timeout=30)


# 1. Rotation.

def test_a_rotated_password_is_refused_once_the_new_file_is_read(live, users, monkeypatch):
    # The race of the finding, made deterministic: while a request with the old password is being
    # checked, the password is rotated and the new file is read (by another request). That check
    # then succeeds (it began before), but no later request may get in with the old password.
    real_check = auth.check_password_hash
    rotated = threading.Event()

    def check_then_rotate(pwhash, password):
        ok = real_check(pwhash, password)
        if not rotated.is_set() and password == PASSWORDS["operator"]:
            rotated.set()
            auth.set_user(users, "operator", "rotated-pw-1", "operator")
            # Another request reads the new file meanwhile (and clears the success cache).
            assert post(live, ("operator", "rotated-pw-1"), "during").status_code == 201
        return ok

    monkeypatch.setattr(auth, "check_password_hash", check_then_rotate)
    assert post(live, ("operator", PASSWORDS["operator"]), "in-flight").status_code == 201
    assert rotated.is_set()
    for i in range(2):  # (a third would meet the throttle: AUTH_MAX_FAILURES is 3 here)
        assert post(live, ("operator", PASSWORDS["operator"]), f"late-{i}").status_code == 401
    assert post(live, ("operator", "rotated-pw-1"), "new").status_code == 201
    assert sorted(m["hostname"] for m in live.db.machines.find()) == ["during", "in-flight", "new"]


# 2. The throttle: atomic per key, and no lockout of someone else.

@pytest.mark.parametrize("round_", range(3))
def test_a_burst_of_guesses_gets_only_the_allowance_checked(live, round_):
    user = ("operator", "admin", "reader")[round_]
    codes = run_together(24, lambda i: post(live, (user, f"guess-{i}")).status_code)
    assert codes.count(401) == 3, codes  # AUTH_MAX_FAILURES checked; every other guess refused unchecked
    assert codes.count(429) == 21, codes
    assert post(live, (user, PASSWORDS[user])).status_code == 429  # and the backoff holds
    assert live.db.machines.count_documents({}) == 0


def test_a_burst_with_the_right_password_is_not_refused(live):
    # The same burst from a legitimate client (a CI job starting 24 requests): no 429.
    codes = run_together(24, lambda i: post(live, ("operator", PASSWORDS["operator"]), f"m{i}").status_code)
    assert codes == [201] * 24
    assert live.db.machines.count_documents({}) == 24


def test_guesses_from_a_shared_address_do_not_lock_out_a_client_that_signed_in_before(live):
    known = requests.Session()
    assert post(live, ("operator", PASSWORDS["operator"]), "m1", known).status_code == 201
    assert known.cookies.get("rm_device")  # its device token
    # A neighbour behind the same address guesses: locked out itself...
    assert [post(live, ("operator", f"guess-{i}")).status_code for i in range(5)] == [401, 401, 401, 429, 429]
    assert post(live, ("operator", PASSWORDS["operator"]), "m2").status_code == 429
    # ...while the known client keeps working, and is throttled on its own token when it guesses.
    assert post(live, ("operator", PASSWORDS["operator"]), "m3", known).status_code == 201
    codes = [post(live, ("operator", "wrong"), "x", known).status_code for _ in range(4)]
    assert codes == [401, 401, 401, 429]
    assert sorted(m["hostname"] for m in live.db.machines.find()) == ["m1", "m3"]


def test_a_forged_or_foreign_device_token_counts_for_nothing(live):
    other = requests.Session()
    assert post(live, ("admin", PASSWORDS["admin"]), "a1", other).status_code == 201
    forged = requests.Session()
    forged.cookies.set("rm_device", "abc.0123456789abcdef0123456789abcdef")
    # Both count in the (username, address) bucket, like a client without a token.
    assert [post(live, ("operator", "wrong"), "x", forged).status_code for _ in range(3)] == [401, 401, 401]
    assert post(live, ("operator", "wrong"), "x", other).status_code == 429  # valid, but for another account
    assert post(live, ("operator", PASSWORDS["operator"]), "x").status_code == 429


# 3. Dashboard sessions.

def sign_in(live, username="operator", password=None, next_url=None):
    browser = requests.Session()
    browser.headers.update(HTML)
    login = browser.get(live.url + "/ui/login", timeout=30)
    data = {"username": username, "password": password or PASSWORDS[username], "csrf_token": token(login.text)}
    if next_url is not None:
        data["next"] = next_url
    return browser, browser.post(live.url + "/ui/login", data=data, allow_redirects=False, timeout=30)


def test_sign_out_ends_the_session_on_the_server(live):
    assert post(live, ("operator", PASSWORDS["operator"]), "m1").status_code == 201
    browser, response = sign_in(live)
    assert response.status_code == 303
    stolen = requests.Session()
    stolen.headers.update(HTML)
    stolen.cookies.update(browser.cookies)  # a copy of the cookie, taken while signed in
    page = stolen.get(live.url + "/ui/machines/m1", timeout=30).text
    assert "Sign out" in page
    csrf = token(page)
    own = token(browser.get(live.url + "/ui/machines/m1", timeout=30).text)
    logout = browser.post(live.url + "/ui/logout", data={"csrf_token": own}, allow_redirects=False, timeout=30)
    assert logout.status_code == 303
    assert "Sign out" not in stolen.get(live.url + "/", timeout=30).text
    response = stolen.post(live.url + "/ui/machines/m1/state", data={"state": "needs_repair", "csrf_token": csrf},
                           allow_redirects=False, timeout=30)
    assert response.status_code == 401
    assert live.db.machines.find_one({"hostname": "m1"})["state"] == "idle"
    assert live.db.web_sessions.count_documents({}) == 0


@pytest.mark.parametrize("next_url", ["/ui/\r\nSet-Cookie: a=b", "/ui/\nx", "/\x7f", "/ui/%0d%0a"])
def test_a_sign_in_next_with_control_characters_is_not_followed(live, next_url):
    _browser, response = sign_in(live, next_url=next_url)
    expected = "/ui/%0d%0a" if next_url == "/ui/%0d%0a" else "/"  # percent-encoded text is harmless
    assert response.status_code == 303
    assert response.headers["Location"] in (expected, live.url + expected)
    assert "a=b" not in response.headers.get("Set-Cookie", "")


# 4. A users file that goes bad while serving.

BROKEN = [
    pytest.param('{"users": {"operator": {"password": "scr', id="truncated"),
    pytest.param('{"users": [["operator", "x"]]}', id="users-a-list"),
    pytest.param('["operator"]', id="not-an-object"),
    pytest.param('{"users": {"operator": {"role": "admin"}}}', id="no-hash"),
    pytest.param('{"users": {"operator": {"password": "x", "role": "root"}}}', id="unknown-role"),
    pytest.param('{"users": {"operator": {"password": NaN}}}', id="nan"),
    pytest.param("", id="empty"),
]


def test_a_malformed_users_file_keeps_the_last_good_accounts(live, users, caplog):
    assert post(live, ("operator", PASSWORDS["operator"]), "before").status_code == 201
    with open(users, encoding="utf-8") as fh:
        good = fh.read()
    caplog.set_level(logging.ERROR, logger="resource_manager.api.auth")
    for i, case in enumerate(BROKEN):
        content, kind = case.values[0], case.id
        caplog.clear()
        with open(users, "w", encoding="utf-8") as fh:
            fh.write(content)
        assert post(live, ("operator", PASSWORDS["operator"]), f"during-{i}").status_code == 201, kind
        assert post(live, ("admin", PASSWORDS["admin"]), f"during-admin-{i}").status_code == 201, kind
        assert post(live, ("reader", PASSWORDS["reader"]), "x").status_code == 403, kind
        health = requests.get(live.url + "/healthz", timeout=30)
        assert health.status_code == 200, kind
        assert health.json()["status"] == "degraded", kind
        assert health.json()["users_file"]["status"] == "stale", kind
        assert health.json()["users_file"]["accounts"] == 3, kind
        errors = [r for r in caplog.records if "unusable" in r.getMessage()]
        assert len(errors) == 1 and "still serving the 3 accounts" in errors[0].getMessage(), kind  # loud, once
        with open(users, "w", encoding="utf-8") as fh:
            fh.write(good)
        assert requests.get(live.url + "/healthz", timeout=30).json()["users_file"]["status"] == "ok", kind
    # Wrong passwords still fail while the file is broken (twice: AUTH_MAX_FAILURES is 3 here).
    with open(users, "w", encoding="utf-8") as fh:
        fh.write(BROKEN[0].values[0])
    assert [post(live, ("operator", "wrong"), "x").status_code for _ in range(2)] == [401, 401]
    assert live.db.machines.count_documents({}) == 1 + 2 * len(BROKEN)


def test_a_users_file_broken_from_the_start_refuses_writes_and_says_so(localdb, tmp_path, dbname):
    path = tmp_path / "users.json"
    path.write_text(json.dumps({"users": ["not", "accounts"]}))
    server = LiveServer({"MONGO_URI": localdb.uri, "MONGO_DBNAME": dbname, "USERS_FILE": str(path)})
    try:
        assert post(server, ("operator", PASSWORDS["operator"])).status_code == 401
        body = requests.get(server.url + "/healthz", timeout=30).json()
        assert body["users_file"]["status"] == "stale" and body["users_file"]["accounts"] == 0
    finally:
        server.stop()


def test_rm_users_refuses_to_touch_a_malformed_file(users, capsys, monkeypatch):
    with open(users, "w", encoding="utf-8") as fh:
        fh.write('{"users": [')
    monkeypatch.setattr("sys.stdin", io.StringIO("pw-123456\n"))
    assert users_main(["--file", users, "add", "x", "--password-stdin"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("rm-users: ") and err.count("\n") == 1 and "Traceback" not in err
    with open(users, encoding="utf-8") as fh:
        assert fh.read() == '{"users": ['



@pytest.mark.parametrize("threads", [8, 32])
def test_the_limiter_admits_no_more_checks_than_the_allowance_under_contention(threads):
    # Many rounds of a burst released at once, in process: exactly max_failures checks each time.
    for _round in range(40):
        limiter = FailureLimiter(max_failures=5, base_delay=60, admit_wait=10)
        key = ("operator", "192.0.2.1")

        def guess(_i, limiter=limiter, key=key):
            if limiter.begin(key):
                return "refused"
            limiter.end(key, False)
            return "checked"

        results = run_together(threads, guess)
        assert results.count("checked") == 5, results
        assert 0 < limiter.retry_after(key) <= 60


def test_behind_a_trusted_proxy_the_throttle_keys_on_the_forwarded_address(localdb, users, dbname):
    server = LiveServer({"MONGO_URI": localdb.uri, "MONGO_DBNAME": dbname, "USERS_FILE": users,
                         "AUTH_MAX_FAILURES": 3, "AUTH_BACKOFF_BASE": 30, "TRUSTED_PROXIES": 1})

    def post_from(address, password):
        return requests.post(server.url + "/machines", json=MACHINE, auth=("operator", password),
                             headers={"X-Forwarded-For": address}, timeout=30).status_code

    try:
        assert [post_from("192.0.2.1", "wrong") for _ in range(4)] == [401, 401, 401, 429]
        assert post_from("192.0.2.2", PASSWORDS["operator"]) == 201  # another client behind the same proxy
    finally:
        server.stop()
        with pymongo.MongoClient(localdb.uri) as client:
            client.drop_database(dbname)
