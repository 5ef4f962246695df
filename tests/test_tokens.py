"""API tokens (issue 15, part 1): created once, stored hashed, scoped, capped by the role, revocable."""

import datetime
import json
import logging
import uuid

import pymongo
import pytest

from resource_manager.admin.users import main as users_main
from resource_manager.api import auth
from resource_manager.core import tokens as records

from .support import ADMIN, OPERATOR, PASSWORDS, READER, LiveServer, seed_machines, seeded_server
from .test_security import snapshot

POOL = {"name": "lab", "cidr": "10.9.0.0/24", "kind": "private"}


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def users(tmp_path_factory):
    """A users file of this module's own: accounts get added, removed, demoted and re-created."""
    path = str(tmp_path_factory.mktemp("token-users") / "users.json")
    for role, password in PASSWORDS.items():
        auth.set_user(path, role, password, role)
    return path


@pytest.fixture(scope="module")
def live(localdb, users):
    """One server for this module's tests (the throttle out of the way: tested on a server of its own)."""
    with seeded_server(localdb.uri, users, "tokens", [("/address-pools", POOL)], ADMIN,
                       AUTH_MAX_FAILURES=10**6) as server:
        seed_machines(server.db, 3)
        yield server


@pytest.fixture
def person(users):
    """A new account of this test's own (role operator): its tokens are its alone."""
    name = f"u{uuid.uuid4().hex[:8]}"
    auth.set_user(users, name, "person-pw-1", "operator")
    return name, "person-pw-1"


def make(live, auth_pair, **body):
    with live.session(auth_pair) as session:
        response = session.post("/tokens", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def call(live, method, path, token, headers=None, **kwargs):
    with live.session() as session:
        return session.request(method, path, headers={**bearer(token), **(headers or {})}, **kwargs)


def test_a_token_is_shown_once_and_stored_as_a_hash(live, person):
    made = make(live, person, scope="reserve", expires_in=90 * 86400, description="jenkins")
    token = made["token"]
    assert token.startswith("rm_") and records.parse(token) == made["_id"]
    assert made["user"] == person[0] and made["scope"] == "reserve" and made["description"] == "jenkins"
    assert made["last_used"] is None and made["expired"] is False
    stored = live.db.api_tokens.find_one({"_id": made["_id"]})
    assert stored["hash"] == records.digest(token)
    assert token.split("_", 2)[2] not in json.dumps(list(live.db.api_tokens.find()), default=str)
    with live.session(person) as session:
        listed = session.get("/tokens").json()["_items"]
    assert [t["_id"] for t in listed] == [made["_id"]]
    assert "token" not in listed[0] and "hash" not in listed[0]
    assert listed[0]["expires"] == made["expires"] and listed[0]["description"] == "jenkins"


def test_a_reserve_token_reserves_extends_and_releases_and_nothing_else(live, person):
    token = make(live, person, scope="reserve")["token"]
    res = call(live, "POST", "/reservations", token, json={"count": 2, "job_id": "b1", "lease_seconds": 600})
    assert res.status_code == 201, res.text
    assert res.json()["owner"] == person[0] and res.json()["user"] == person[0]
    rid = res.json()["_id"]
    assert call(live, "POST", f"/reservations/{rid}/extend", token, json={"lease_seconds": 900}).status_code == 200
    assert call(live, "DELETE", f"/reservations/{rid}", token).status_code == 200
    assert call(live, "DELETE", "/reservations", token, params={"job_id": "b1"}).status_code == 200
    got = call(live, "POST", "/address-pools/lab/allocate", token, json={"count": 1})
    assert got.status_code == 201, got.text
    address = got.json()["addresses"][0]
    etag = live.db.private_addresses.find_one({"address": address})["_etag"]
    assert call(live, "DELETE", f"/private-addresses/{address}", token, {"If-Match": etag}).status_code == 204
    # Not the sweep, not machines, not pools, not an address nobody holds.
    with live.session(OPERATOR) as operator:
        assert operator.post("/private-addresses", json={"address": "10.9.1.1"}).status_code == 201
    etag = live.db.private_addresses.find_one({"address": "10.9.1.1"})["_etag"]
    before = snapshot(live.db)
    for method, path, body in (("POST", "/reservations/sweep", None), ("POST", "/machines", {"hostname": "x"}),
                               ("POST", "/address-pools", POOL), ("DELETE", "/private-addresses/10.9.1.1", None),
                               ("PATCH", "/machines/m00000.lab.example.com", {"owner": "x"})):
        response = call(live, method, path, token, {"If-Match": etag}, json=body)
        assert response.status_code == 403, (method, path, response.text)
        assert "scope 'reserve'" in response.json()["_error"]["message"]
    assert snapshot(live.db) == before


def test_revoked_expired_malformed_and_unknown_tokens_are_401_even_on_reads(live, person):
    made = make(live, person, scope="write")
    token = made["token"]
    assert call(live, "GET", "/machines", token).status_code == 200
    live.db.api_tokens.update_one({"_id": made["_id"]}, {"$set": {"expires": records.utcnow()}})
    response = call(live, "GET", "/machines", token)
    assert response.status_code == 401 and "expired" in response.json()["_error"]["message"]
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    other = make(live, person, scope="write")
    with live.session(person) as session:
        assert session.delete(f"/tokens/{other['_id']}").status_code == 204
        assert session.delete(f"/tokens/{other['_id']}").status_code == 404
        assert session.delete("/tokens/%00x").status_code == 404
    before = snapshot(live.db)
    for bad in (other["token"], "rm_x", token[:-1] + ("A" if token[-1] != "A" else "B"), "", "a b"):
        response = call(live, "POST", "/machines", bad, json={"hostname": "x", "state": "idle"})
        assert response.status_code == 401, bad
        assert token[20:] not in response.text and other["token"][20:] not in response.text
    assert snapshot(live.db) == before


def test_the_scope_and_the_role_cap_a_token(live, users):
    with live.session(READER) as reader:
        refused = reader.post("/tokens", json={"scope": "write"})
        assert refused.status_code == 422 and "at most 'read'" in refused.json()["_issues"]["scope"]
    read = make(live, READER, scope="read")["token"]
    assert call(live, "GET", "/tokens", read).status_code == 200
    assert call(live, "POST", "/reservations", read, json={"count": 1}).status_code == 403
    # An admin's admin token, then the admin is demoted: the token acts as an operator.
    boss = (f"boss{uuid.uuid4().hex[:6]}", "boss-pw-123")
    auth.set_user(users, *boss, "admin")
    token = make(live, boss, scope="admin")["token"]
    assert call(live, "DELETE", "/address-pools/none", token).status_code == 404  # admin: as far as the lookup
    auth.set_user(users, *boss, "operator")
    response = call(live, "DELETE", "/address-pools/lab", token)
    assert response.status_code == 403
    assert "limited to 'write' by the role 'operator'" in response.json()["_error"]["message"]
    assert call(live, "POST", "/tokens", token, json={"scope": "read"}).status_code == 403
    assert live.db.address_pools.count_documents({}) == 1


def test_removing_a_user_kills_their_tokens_even_if_the_name_comes_back(live, users, person):
    first, second = (make(live, person, scope="write")["token"] for _ in range(2))
    assert call(live, "GET", "/tokens", first).status_code == 200
    auth.remove_user(users, person[0])
    auth.set_user(users, person[0], "other-pw-123", "operator")  # a new account under the same name
    response = call(live, "GET", "/tokens", first)
    assert response.status_code == 401 and "no longer exists" in response.json()["_error"]["message"]
    assert call(live, "GET", "/tokens", second).status_code == 401
    auth.remove_user(users, person[0])
    assert call(live, "GET", "/tokens", second).status_code == 401
    assert live.db.api_tokens.count_documents({"user": person[0]}) == 0  # deleted on sight


def test_tokens_of_others_are_invisible_except_to_admins(live, users, person):
    other = (f"v{uuid.uuid4().hex[:8]}", "other-pw-123")
    auth.set_user(users, *other, "reader")
    mine = make(live, person, scope="read")
    theirs = make(live, ADMIN, scope="read", user=other[0], description="made by an admin")
    assert theirs["user"] == other[0] and theirs["created_by"] == "admin"
    with live.session(other) as session:
        assert [t["_id"] for t in session.get("/tokens").json()["_items"]] == [theirs["_id"]]
        assert session.get("/tokens", params={"user": person[0]}).status_code == 403
        assert session.delete(f"/tokens/{mine['_id']}").status_code == 404
        assert session.post("/tokens", json={"scope": "read", "user": person[0]}).status_code == 403
    # Another user's token authenticates as that user: that is what a token is.
    assert call(live, "GET", "/tokens", mine["token"]).json()["_items"][0]["user"] == person[0]
    with live.session(ADMIN) as admin:
        everyone = {t["_id"] for t in admin.get("/tokens").json()["_items"]}
        assert {mine["_id"], theirs["_id"]} <= everyone
        assert [t["_id"] for t in admin.get("/tokens", params={"user": person[0]}).json()["_items"]] == [mine["_id"]]
        assert admin.delete(f"/tokens/{mine['_id']}").status_code == 204
    assert call(live, "GET", "/tokens", mine["token"]).status_code == 401


def test_only_an_admin_token_makes_tokens_and_never_one_that_outlives_it(live, person):
    write = make(live, ADMIN, scope="write")
    assert call(live, "POST", "/tokens", write["token"], json={"scope": "read"}).status_code == 403
    root = make(live, ADMIN, scope="admin", expires_in=3600)
    late = call(live, "POST", "/tokens", root["token"], json={"scope": "read", "expires_in": 7200})
    assert late.status_code == 422 and "not later than" in late.json()["_issues"]["expires"]
    child = call(live, "POST", "/tokens", root["token"], json={"scope": "reserve", "expires_in": 600,
                                                                "user": person[0]})
    assert child.status_code == 201 and child.json()["created_by"] == f"admin (token {root['_id']})"
    assert child.headers["Cache-Control"] == "no-store"
    # A lower token revokes itself, not its siblings.
    other = make(live, ADMIN, scope="read")
    assert call(live, "DELETE", f"/tokens/{other['_id']}", write["token"]).status_code == 403
    assert call(live, "DELETE", f"/tokens/{write['_id']}", write["token"]).status_code == 204
    assert call(live, "GET", "/machines", write["token"]).status_code == 401


BAD_REQUESTS = [
    ({}, "scope"), ({"scope": "root"}, "scope"), ({"scope": "read", "expires_in": 0}, "expires_in"),
    ({"scope": "read", "expires_in": "90d"}, "expires_in"),
    ({"scope": "read", "expires_in": 367 * 86400}, "expires_in"),
    ({"scope": "read", "expires": "2000-01-01T00:00:00Z"}, "expires"),
    ({"scope": "read", "expires": "soon"}, "expires"),
    # Dates whose offset takes them past the calendar's ends (an OverflowError, once a 500).
    ({"scope": "read", "expires": "9999-12-31T23:59:59-23:59"}, "expires"),
    ({"scope": "read", "expires": "0001-01-01T00:00:00+23:59"}, "expires"),
    ({"scope": "read", "expires": "2099-01-01", "expires_in": 60}, "expires"), ({"scope": "read", "x": 1}, "x"),
    ({"scope": "read", "description": "d" * 201}, "description"), ({"scope": "read", "user": ""}, "user"),
]


def test_a_bad_token_request_is_422_naming_the_field(live, person):
    with live.session(person) as session:
        for body, field in BAD_REQUESTS:
            response = session.post("/tokens", json=body)
            assert response.status_code == 422, (body, response.text)
            assert field in response.json()["_issues"], body
        assert session.post("/tokens", data="[]", headers={"Content-Type": "application/json"}).status_code == 400
    with live.session(ADMIN) as admin:
        response = admin.post("/tokens", json={"scope": "read", "user": "nobody"})
        assert response.status_code == 422 and response.json()["_issues"] == {"user": "no user 'nobody'"}
    assert live.db.api_tokens.count_documents({"user": {"$in": [person[0], "nobody"]}}) == 0


def test_last_used_is_written_at_most_once_a_minute(live, person):
    made = make(live, person, scope="read")
    assert call(live, "GET", "/machines", made["token"]).status_code == 200
    first = live.db.api_tokens.find_one({"_id": made["_id"]})["last_used"]
    assert first is not None
    for _ in range(3):
        assert call(live, "GET", "/machines", made["token"]).status_code == 200
    assert live.db.api_tokens.find_one({"_id": made["_id"]})["last_used"] == first
    earlier = first - datetime.timedelta(seconds=61)
    live.db.api_tokens.update_one({"_id": made["_id"]}, {"$set": {"last_used": earlier}})
    assert call(live, "GET", "/machines", made["token"]).status_code == 200
    assert live.db.api_tokens.find_one({"_id": made["_id"]})["last_used"] > earlier
    with live.session(person) as session:
        assert session.get("/tokens").json()["_items"][0]["last_used"] is not None


def test_wrong_secrets_are_throttled_like_wrong_passwords(localdb, users, dbname, caplog):
    caplog.set_level(logging.DEBUG)
    server = LiveServer({"MONGO_URI": localdb.uri, "MONGO_DBNAME": dbname, "USERS_FILE": users,
                         "AUTH_MAX_FAILURES": 3, "AUTH_BACKOFF_BASE": 30})
    try:
        made = make(server, OPERATOR, scope="write")
        guess = made["token"][:-4] + "AAAA"
        assert [call(server, "GET", "/machines", guess).status_code for _ in range(4)] == [401, 401, 401, 429]
        # A neighbour's guesses at the token's (public) id from the same address lock out the guesses only:
        # the token whose secret is right is served, and the guessing stays refused.
        assert call(server, "GET", "/machines", made["token"]).status_code == 200
        assert call(server, "GET", "/machines", guess).status_code == 429
        assert call(server, "POST", "/machines", made["token"], json={"hostname": "t1", "state": "idle"}).status_code \
            == 201
        # Random tokens from one address share one bucket; a known token's own bucket is apart from it.
        sprayed = [call(server, "GET", "/machines", f"rm_{i:016x}_{'a' * 43}").status_code for i in range(4)]
        assert sprayed == [401, 401, 401, 429]
        assert call(server, "GET", "/tokens", make(server, ADMIN, scope="read")["token"]).status_code == 200
        assert f"3 failed logins for token {made['_id']} from 127.0.0.1" in caplog.text
        assert "3 failed logins for unknown or malformed tokens from 127.0.0.1" in caplog.text
        assert made["token"][20:] not in caplog.text and guess[20:] not in caplog.text  # ids at most, never secrets
    finally:
        server.stop()
        with pymongo.MongoClient(localdb.uri) as client:
            client.drop_database(dbname)


def test_rm_users_remove_deletes_the_users_tokens(live, users, person, monkeypatch, capsys):
    made = [make(live, person, scope="read") for _ in range(2)]
    kept = make(live, OPERATOR, scope="read")
    monkeypatch.setenv("MONGO_URI", live.app.config["MONGO_URI"])
    monkeypatch.setenv("RM_MONGO_DBNAME", live.db.name)
    assert users_main(["--file", users, "remove", person[0]]) == 0
    assert capsys.readouterr().out == f"{person[0]}: removed; 2 API token(s) deleted\n"
    assert live.db.api_tokens.count_documents({"_id": {"$in": [m["_id"] for m in made]}}) == 0
    assert live.db.api_tokens.count_documents({"_id": kept["_id"]}) == 1
    monkeypatch.delenv("MONGO_URI")  # no database configured: the file changes, and the note says so
    auth.set_user(users, person[0], "person-pw-1", "operator")
    assert users_main(["--file", users, "remove", person[0]]) == 0
    assert "not deleted (MONGO_URI is not set)" in capsys.readouterr().out
