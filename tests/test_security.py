"""Security: writes need credentials on every route, roles hold, secrets stay out of replies, data and logs."""

import base64
import json
import logging
import os
import re
import stat

import pymongo
import pytest
import requests
from requests.adapters import HTTPAdapter

from resource_manager.admin import users
from resource_manager.api.datalayer import COUNTS
from resource_manager.api.ratelimit import FailureLimiter

from .support import ADMIN, OPERATOR, PASSWORDS, READER, LiveServer, seeded_server

WRITE_METHODS = ("POST", "PUT", "PATCH", "DELETE")
SEEDS = [("/machines", {"hostname": "seed-1", "state": "idle"}),
         ("/public-addresses", {"address": "192.0.2.10"}),
         ("/private-addresses", {"address": "10.0.0.10"})]
# A plausible value for a URL variable, by the route's first path segment; the seeds make them exist.
URL_VALUES = {"machines": "seed-1", "public-addresses": "192.0.2.10", "private-addresses": "10.0.0.10",
              "address-pools": "pool-1", "reservations": "000000000000000000000001"}
FALLBACK_VALUES = ("seed-1", "1", "000000000000000000000001", "x")
HASH_MARKERS = ("scrypt:", "pbkdf2:", "$2b$", "argon2")
SESSION_ROUTE = re.compile(r"/log(in|out)\b|/sign-?(in|out)\b")


def snapshot(db):
    # Dashboard sign-ins store their sessions (web_sessions): that is signing in, not a write.
    # Listing counts are a cache a read may refresh (datalayer.COUNTS), not data. A token's
    # last_used records that a request came, refused or not.
    return {name: sorted(json.dumps({k: v for k, v in d.items() if k != "last_used"}, default=str, sort_keys=True)
                         for d in db[name].find())
            for name in sorted(db.list_collection_names()) if name not in ("web_sessions", COUNTS)}


@pytest.fixture(scope="module")
def server(localdb, users_file):
    """One server for the route sweeps; the failure limit is out of the way (tested on its own below)."""
    # With a SECRET_KEY, so that the dashboard (where there is one) accepts sign-ins and forms.
    with seeded_server(localdb.uri, users_file, "security", SEEDS, OPERATOR,
                       AUTH_MAX_FAILURES=10**6, SECRET_KEY="test-secret-key") as live:
        yield live


def write_routes(app):
    """Yield (method, url, rule) for every write method of every route the app serves."""
    adapter = app.url_map.bind("127.0.0.1")
    for rule in app.url_map.iter_rules():
        for method in sorted(set(rule.methods) & set(WRITE_METHODS)):
            yield method, build_url(adapter, rule, method), rule


def build_url(adapter, rule, method):
    segment = rule.rule.strip("/").split("/")[0]
    candidates = [URL_VALUES.get(segment), *FALLBACK_VALUES]
    for value in filter(None, candidates):
        try:
            return adapter.build(rule.endpoint, dict.fromkeys(rule.arguments, value), method=method)
        except Exception:  # a converter refused this candidate; try the next
            continue
    raise AssertionError(f"no plausible URL values for {rule.rule}")


def refused(response, codes):
    """Whether the response refuses the write: one of `codes`, or a redirect to a login page."""
    if response.status_code in codes:
        return True
    return response.is_redirect and "login" in response.headers.get("Location", "")


def csrf_token(session):
    """A CSRF token of this session from the dashboard's sign-in form (None without a dashboard)."""
    page = session.get("/ui/login")
    match = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page.text)
    return match.group(1) if match else None


def send(session, method, url, headers):
    """Send a write; past a CSRF refusal (a dashboard form), sign in with the session's credentials
    through the sign-in form, as a browser would, and send it again with a valid token."""
    response = session.request(method, url, json={}, headers=headers, allow_redirects=False)
    # A dashboard form refuses without a session (401, before reading the form) or without the token.
    needs_session = response.status_code == 401 and "sign in" in response.text.lower() and session.auth
    if needs_session or (response.status_code == 400 and "csrf" in response.text.lower()):
        token = csrf_token(session)
        assert token, f"{method} {url} wants a CSRF token that no sign-in form offers"
        if session.auth:
            username, password = session.auth
            session.post("/ui/login", data={"csrf_token": token, "username": username, "password": password},
                         allow_redirects=False)
            token = csrf_token(session)
        response = session.request(method, url, data={"csrf_token": token}, headers=headers,
                                   allow_redirects=False)
    return response


def sweep(server, auth, codes, headers=None):
    """Send every write with `auth`; return the routes that did not refuse it with one of `codes`.

    `codes` may be a function of (method, rule) answering the codes of that route, or None to skip it.
    """
    before = snapshot(server.db)
    failures = []
    with server.session(auth) as session:
        for method, url, rule in write_routes(server.app):
            if SESSION_ROUTE.search(rule.rule):  # signing in and out: anybody may; checked below
                continue
            expected = codes(method, rule) if callable(codes) else codes
            if expected is None:  # allowed to this caller: tested where it is allowed
                continue
            response = send(session, method, url, headers)
            if response.status_code == 405:
                # Eve lists POST on item URLs for X-HTTP-Method-Override; if nobody may POST there, fine.
                with server.session(ADMIN) as admin:
                    if admin.request(method, url, json={}, allow_redirects=False).status_code == 405:
                        continue
            if not refused(response, expected):
                failures.append(f"{method} {url} ({rule.rule}): {response.status_code} {response.text[:200]}")
            elif response.status_code in (401, 403, 429) and "json" in response.headers.get("Content-Type", ""):
                assert response.json()["_error"]["code"] == response.status_code
    assert snapshot(server.db) == before, "a refused write changed the database"
    return failures


def test_without_a_secret_key_every_write_is_still_refused(localdb, users_file, dbname):
    # The dashboard (where there is one) is read-only then: its forms must refuse, not fail.
    live = LiveServer({"MONGO_URI": localdb.uri, "MONGO_DBNAME": dbname, "USERS_FILE": users_file})
    try:
        with live.session(OPERATOR) as operator:
            assert operator.post("/machines", json={"hostname": "seed-1", "state": "idle"}).status_code == 201
        assert sweep(live, None, (401, 403)) == []
    finally:
        live.stop()
        with pymongo.MongoClient(localdb.uri) as client:
            client.drop_database(dbname)


def test_login_routes_change_nothing(server):
    before = snapshot(server.db)
    with server.session() as session:
        for method, url, rule in write_routes(server.app):
            if SESSION_ROUTE.search(rule.rule):
                assert send(session, method, url, None).status_code < 500
    assert snapshot(server.db) == before


def test_the_sweep_covers_every_resource(server):
    urls = {url for _method, url, _rule in write_routes(server.app)}
    for path, _doc in SEEDS:
        assert path in urls and f"{path}/{URL_VALUES[path[1:]]}" in urls


def test_every_write_route_refuses_anonymous_writes(server):
    assert sweep(server, None, (401,)) == []


@pytest.mark.parametrize("auth", [("operator", "wrong-password"), ("nobody", "x"), ("operator", ""),
                                  ("", PASSWORDS["operator"])], ids=["wrong-password", "unknown-user",
                                                                    "empty-password", "empty-user"])
def test_every_write_route_refuses_bad_credentials(server, auth):
    assert sweep(server, auth, (401,)) == []


@pytest.mark.parametrize("authorization", ["Bearer abc", "Basic !!!", "Basic " + base64.b64encode(b"nocolon").decode(),
                                           "Basic", "Digest username=\"operator\""])
def test_malformed_authorization_headers_are_401(server, authorization):
    assert sweep(server, None, (401,), headers={"Authorization": authorization}) == []


def own_tokens(method, rule, codes=(403,)):
    # Anybody signed in manages their own tokens (test_tokens.py); this sweep's are none of theirs.
    if rule.rule.startswith("/tokens"):
        return (422,) if method == "POST" else (404,)
    return codes


def test_every_write_route_refuses_the_reader_role(server):
    assert sweep(server, READER, own_tokens) == []


# Tokens: every write route refuses dead ones (401), and live ones beyond their scope (403).

@pytest.fixture(scope="module")
def tokens(server):
    """Tokens of the operator (scopes read, reserve, write; one revoked, one expired) and of the reader."""
    made = {}
    for who, auth, scope in (("read", OPERATOR, "read"), ("reserve", OPERATOR, "reserve"),
                             ("write", OPERATOR, "write"), ("revoked", OPERATOR, "write"),
                             ("expired", OPERATOR, "write"), ("readers", READER, "read")):
        with server.session(auth) as session:
            response = session.post("/tokens", json={"scope": scope, "description": f"sweep {who}"})
            assert response.status_code == 201, response.text
            made[who] = response.json()
    with server.session(OPERATOR) as operator:
        assert operator.delete(f"/tokens/{made['revoked']['_id']}").status_code == 204
    created = server.db.api_tokens.find_one({"_id": made["expired"]["_id"]})["created"]
    server.db.api_tokens.update_one({"_id": made["expired"]["_id"]}, {"$set": {"expires": created}})
    return {who: record["token"] for who, record in made.items()}


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


def dashboard(rule):
    return rule.endpoint.startswith("web.")  # the dashboard ignores tokens: no session, 401


@pytest.mark.parametrize("which", ["revoked", "expired", "malformed", "unknown", "truncated", "other-prefix"])
def test_every_write_route_refuses_dead_tokens(server, tokens, which):
    token = {"malformed": "rm_not_a_token", "unknown": "rm_0123456789abcdef_" + "A" * 43,
             "truncated": tokens["write"][:-1], "other-prefix": "gh" + tokens["write"][2:]}.get(which)
    assert sweep(server, None, (401,), headers=bearer(token or tokens[which])) == []


@pytest.mark.parametrize("which", ["read", "readers"])
def test_every_write_route_refuses_read_tokens_of_any_user(server, tokens, which):
    # "readers": another user's token acts as that user (a reader), whoever sends it.
    def codes(method, rule):
        return (401,) if dashboard(rule) else (404,) if rule.rule.startswith("/tokens/") else (403,)

    assert sweep(server, None, codes, headers=bearer(tokens[which])) == []


def test_a_reserve_token_is_refused_everywhere_but_on_reserving(server, tokens):
    from resource_manager.api import routemeta

    routes = routemeta.table(server.app)  # the declarations the token check reads (test_query_params.py pins them)

    def codes(method, rule):
        route = routes.find(rule.rule, method)
        if route is not None and route.scope == "reserve":
            return None  # allowed: test_tokens.py reserves, extends and releases with one
        return (401,) if dashboard(rule) else (404,) if rule.rule.startswith("/tokens/") else (403,)

    assert sweep(server, None, codes, headers=bearer(tokens["reserve"])) == []


def test_a_write_token_writes_so_the_token_sweeps_are_not_vacuous(server, tokens):
    with server.session() as session:
        assert session.post("/machines", json={"hostname": "probe-t", "state": "idle"},
                            headers=bearer(tokens["write"])).status_code == 201
        etag = session.get("/machines/probe-t").json()["_etag"]
        assert session.delete("/machines/probe-t", headers={**bearer(tokens["write"]), "If-Match": etag}
                              ).status_code == 204


def test_unauthenticated_response_asks_for_basic_auth(server):
    with server.session() as anon:
        response = anon.post("/machines", json={"hostname": "x", "state": "idle"})
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Basic")


@pytest.mark.parametrize(("method", "override"), [("GET", "DELETE"), ("POST", "DELETE"), ("POST", "PATCH"),
                                                  ("GET", "PUT")])
def test_method_override_header_does_not_bypass_auth(server, method, override):
    before = snapshot(server.db)
    for auth, code in ((None, 401), (READER, 403)):
        with server.session(auth) as session:
            response = session.request(method, "/machines/seed-1", json={"owner": "x"},
                                       headers={"X-HTTP-Method-Override": override, "If-Match": "*"})
        assert response.status_code == code, response.text
    assert snapshot(server.db) == before


def test_the_operator_can_write_so_the_sweeps_are_not_vacuous(server):
    with server.session(OPERATOR) as operator:
        assert operator.post("/machines", json={"hostname": "probe", "state": "idle"}).status_code == 201
        assert operator.write("DELETE", "/machines/probe").status_code == 204


def test_no_reply_carries_a_password_or_hash(server):
    texts = []
    for auth in (None, ADMIN, OPERATOR, READER, ("admin", "bad")):
        with server.session(auth) as session:
            for method, path in (("GET", "/"), ("GET", "/machines"), ("GET", "/machines/seed-1"),
                                 ("GET", "/healthz"), ("OPTIONS", "/machines"), ("POST", "/machines"),
                                 ("GET", "/nowhere"), ("GET", "/machines?where={\"$where\":1}")):
                response = session.request(method, path, json={"hostname": "seed-1", "state": "idle"})
                texts.append(response.text + json.dumps(dict(response.headers)))
    everything = "\n".join(texts)
    for secret in (*PASSWORDS.values(), *HASH_MARKERS):
        assert secret not in everything


def test_hashes_live_only_in_the_users_file(server, users_file):
    with open(users_file, encoding="utf-8") as fh:
        content = fh.read()
    assert stat.S_IMODE(os.stat(users_file).st_mode) == 0o600
    for password in PASSWORDS.values():
        assert password not in content
    assert content.count("scrypt:") == len(PASSWORDS)
    stored = json.dumps(snapshot(server.db))
    for secret in (*PASSWORDS.values(), *HASH_MARKERS):
        assert secret not in stored


def test_rm_users_list_shows_roles_not_hashes(users_file, capsys):
    assert users.main(["--file", users_file, "list"]) == 0
    out = capsys.readouterr().out
    assert "operator\toperator" in out
    assert not any(marker in out for marker in HASH_MARKERS)


def test_logs_carry_no_passwords_or_hashes(localdb, users_file, dbname, caplog):
    caplog.set_level(logging.DEBUG)
    live = LiveServer({"MONGO_URI": localdb.uri, "MONGO_DBNAME": dbname, "USERS_FILE": users_file,
                       "AUTH_MAX_FAILURES": 2})
    try:
        for auth in (OPERATOR, ("operator", "guess-1"), ("operator", "guess-2"), ("operator", "guess-3"),
                     OPERATOR, ("admin", "guess-4"), ADMIN, READER, ("nobody", "guess-5")):
            with live.session(auth) as session:
                session.post("/machines", json={"hostname": "h1", "state": "idle"})
                session.get("/machines", params={"where": '{"hostname": {"$in": 5}}'})  # logged by Eve
    finally:
        live.stop()
        with pymongo.MongoClient(localdb.uri) as client:
            client.drop_database(dbname)
    assert "failed logins for user 'operator'" in caplog.text  # the lockout was logged...
    for secret in (*PASSWORDS.values(), "guess-", *HASH_MARKERS):
        assert secret not in caplog.text  # ...without what was typed


# Backoff on repeated bad passwords, over HTTP.

class SourceAddressAdapter(HTTPAdapter):
    """Connect from another loopback address, as a second client machine would."""

    def __init__(self, source):
        self.source = source
        super().__init__()

    def init_poolmanager(self, *args, **kwargs):
        kwargs["source_address"] = (self.source, 0)
        super().init_poolmanager(*args, **kwargs)


@pytest.fixture
def limited(localdb, users_file, dbname):
    """A server that refuses a username+address after 3 failures, for 30 s and doubling."""
    live = LiveServer({"MONGO_URI": localdb.uri, "MONGO_DBNAME": dbname, "USERS_FILE": users_file,
                       "AUTH_MAX_FAILURES": 3, "AUTH_BACKOFF_BASE": 30, "SECRET_KEY": "test-secret-key"})
    yield live
    live.stop()
    with pymongo.MongoClient(localdb.uri) as client:
        client.drop_database(dbname)


def post(live, auth, hostname="h1", source=None):
    with live.session(auth) as session:
        if source:
            session.mount("http://", SourceAddressAdapter(source))
        return session.post("/machines", json={"hostname": hostname, "state": "idle"})


def test_repeated_bad_passwords_get_429_with_retry_after(limited):
    for _ in range(3):
        assert post(limited, ("operator", "wrong")).status_code == 401
    blocked = post(limited, OPERATOR)  # even the right password: guesses must teach nothing
    assert blocked.status_code == 429
    assert blocked.json()["_error"]["code"] == 429
    assert 1 <= int(blocked.headers["Retry-After"]) <= 30
    assert limited.db.machines.count_documents({}) == 0
    # Others are not locked out: another user from this address, this user from another address.
    assert post(limited, ADMIN, "h2").status_code == 201
    assert post(limited, OPERATOR, "h3", source="127.0.0.2").status_code == 201
    # Reads stay open.
    assert requests.get(limited.url + "/machines", timeout=10).status_code == 200


def test_a_successful_login_resets_the_count(limited):
    for _ in range(2):
        assert post(limited, ("operator", "wrong")).status_code == 401
    assert post(limited, OPERATOR, "h1").status_code == 201
    for _ in range(2):
        assert post(limited, ("operator", "wrong")).status_code == 401
    assert post(limited, OPERATOR, "h2").status_code == 201


def test_unknown_users_are_limited_too(limited):
    codes = [post(limited, ("ghost", f"guess-{i}")).status_code for i in range(5)]
    assert codes == [401, 401, 401, 429, 429]


def test_the_dashboard_sign_in_is_limited_too(limited):
    with limited.session() as browser:
        def sign_in(password):
            token = csrf_token(browser)
            return browser.post("/ui/login", data={"csrf_token": token, "username": "operator", "password": password},
                                allow_redirects=False).status_code

        assert [sign_in("wrong") for _ in range(3)] == [401, 401, 401]
        assert sign_in(PASSWORDS["operator"]) == 429
    # The API shares the count: the same user from the same address waits there as well.
    assert post(limited, OPERATOR).status_code == 429


# The backoff schedule, with a clock we move by hand.

class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_backoff_doubles_up_to_the_cap_and_expires_after_the_window():
    clock = Clock()
    limiter = FailureLimiter(max_failures=3, window=600, base_delay=1, max_delay=60, clock=clock)
    key = ("operator", "192.0.2.1")
    assert [limiter.failed(key) for _ in range(3)] == [0, 0, 1]
    assert limiter.retry_after(key) == 1
    delays = []
    for _ in range(8):
        clock.now += limiter.retry_after(key)
        assert limiter.retry_after(key) == 0
        delays.append(limiter.failed(key))
    assert delays == [2, 4, 8, 16, 32, 60, 60, 60]
    clock.now += 601
    assert limiter.retry_after(key) == 0
    assert limiter.failed(key) == 0  # a fresh start after a quiet window


def test_the_failure_table_stays_bounded():
    clock = Clock()
    limiter = FailureLimiter(max_failures=3, max_keys=100, clock=clock)
    for i in range(1000):
        clock.now += 0.001
        limiter.failed((f"user{i}", "192.0.2.1"))
    assert len(limiter._failures) <= 100
    assert limiter.retry_after(("user999", "192.0.2.1")) == 0  # one failure: not limited
