"""A NUL character anywhere in a request's URL or headers: 404 in the path, 400 elsewhere, never 500.

PostgreSQL (behind the embedded database) cannot hold U+0000: one that reached a query was a 500.
Every route the app serves is tried, enumerated from app.url_map (as test_security.py does), so a
route added later is covered without a line here; signed in as admin, so that no route refuses
before it would read its input. The database is unchanged afterwards.
"""

import json

import pytest

from .support import ADMIN, seeded_server

SEEDS = [("/machines", {"hostname": "seed-1", "state": "idle"}),
         ("/public-addresses", {"address": "192.0.2.10"}),
         ("/private-addresses", {"address": "10.0.0.10"}),
         ("/address-pools", {"name": "pool-1", "cidr": "10.9.0.0/24", "kind": "private"})]
PLAUSIBLE = {"machines": "seed-1", "public-addresses": "192.0.2.10", "private-addresses": "10.0.0.10",
             "address-pools": "pool-1", "reservations": "000000000000000000000001", "tokens": "0123456789abcdef"}
FALLBACK = ("seed-1", "machines", "1", "x")
NUL = "a\x00b"
# The query parameters our routes read (and a name nobody reads): each is tried with a NUL in its value.
QUERY_NAMES = ("job_id", "owner", "state", "user", "max_results", "page", "where", "sort", "projection", "wait",
               "dry_run", "grace", "q", "tag", "unknown")


@pytest.fixture(scope="module")
def server(localdb, users_file):
    with seeded_server(localdb.uri, users_file, "nul", SEEDS, ADMIN, SECRET_KEY="test-secret-key") as live:
        yield live


def snapshot(db):
    return {name: sorted(json.dumps(d, default=str, sort_keys=True) for d in db[name].find())
            for name in sorted(db.list_collection_names()) if name not in ("web_sessions", "listing_counts")}


def routes(app):
    """Yield (rule, method, values): every method of every route, with plausible URL values."""
    adapter = app.url_map.bind("127.0.0.1")
    for rule in app.url_map.iter_rules():
        segment = rule.rule.strip("/").split("/")[0]
        for method in sorted(rule.methods - {"OPTIONS"}):
            for candidate in (PLAUSIBLE.get(segment), *FALLBACK):
                values = {name: candidate for name in rule.arguments}
                if candidate is None or not _builds(adapter, rule, values, method):
                    continue
                for name in rule.arguments:  # e.g. <any(machines, ...):resource>: a name the converter knows
                    if not _builds(adapter, rule, {**values, name: "seed-1"}, method):
                        values[name] = next(v for v in (*FALLBACK, *PLAUSIBLE.values())
                                            if _builds(adapter, rule, {**values, name: v}, method))
                yield rule, method, values
                break


def _builds(adapter, rule, values, method):
    try:
        adapter.build(rule.endpoint, values, method=method)
        return True
    except Exception:  # a converter refused a value
        return False


def _url(app, rule, values, method):
    return app.url_map.bind("127.0.0.1").build(rule.endpoint, values, method=method)


def _send(session, method, url, **kwargs):
    return session.request(method, url, json={} if method in ("POST", "PUT", "PATCH") else None,
                           allow_redirects=False, **kwargs)


def test_a_nul_in_any_url_variable_of_any_route_is_404(server):
    before = snapshot(server.db)
    tried, wrong = 0, []
    adapter = server.app.url_map.bind("127.0.0.1")
    with server.session(ADMIN) as admin:
        for rule, method, values in routes(server.app):
            for name in rule.arguments:
                if not _builds(adapter, rule, {**values, name: NUL}, method):
                    continue  # the converter refuses it (any(), int): the route is never reached
                response = _send(admin, method, _url(server.app, rule, {**values, name: NUL}, method))
                tried += 1
                if response.status_code != 404 or (method != "HEAD" and "NUL" not in response.text):
                    wrong.append(f"{method} {rule.rule} <{name}>: {response.status_code} {response.text[:120]}")
    assert not wrong, "\n".join(wrong)
    assert tried >= 20  # the routes with names and ids: not a vacuous sweep
    assert snapshot(server.db) == before


@pytest.mark.parametrize("name", QUERY_NAMES)
def test_a_nul_in_any_query_value_of_any_route_is_400(server, name):
    before = snapshot(server.db)
    wrong, tried = [], 0
    with server.session(ADMIN) as admin:
        for rule, method, values in routes(server.app):
            response = _send(admin, method, _url(server.app, rule, values, method), params={name: NUL})
            tried += 1
            if response.status_code != 400 or (method != "HEAD" and "NUL" not in response.text):
                wrong.append(f"{method} {rule.rule}?{name}=: {response.status_code} {response.text[:120]}")
    assert not wrong, "\n".join(wrong)
    assert tried >= 40
    assert snapshot(server.db) == before


def test_the_issues_routes_answer_4xx_with_a_nul(server):
    # The cases reported, with and without credentials: each was a 500.
    with server.session() as anon, server.session(ADMIN) as admin:
        for session, method, url, code in [
                (anon, "GET", "/reservations/%00", 404), (anon, "GET", "/reservations/%00/history", 404),
                (anon, "GET", "/reservations?job_id=%00", 400), (anon, "GET", "/reservations?owner=%00", 400),
                (anon, "GET", "/address-pools/%00", 404), (anon, "GET", "/ui/machines/%00", 404),
                (admin, "GET", "/tokens?user=%00", 400), (admin, "DELETE", "/reservations/%00", 404),
                (admin, "POST", "/reservations/%00/extend", 404), (admin, "POST", "/address-pools/%00/allocate", 404),
                (admin, "DELETE", "/tokens/%00", 404)]:
            response = _send(session, method, url)
            assert response.status_code == code, (method, url, response.status_code, response.text[:200])
            if not url.startswith("/ui/"):
                body = response.json()
                assert body["_status"] == "ERR" and "NUL" in body["_error"]["message"], body


def test_a_nul_in_a_header_is_400(server):
    import socket

    # requests refuses to send one; a raw client can.
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"GET /reservations HTTP/1.1\r\nHost: x\r\nX-Reason: a\x00b\r\nConnection: close\r\n\r\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
    assert b"NUL character" in answer
