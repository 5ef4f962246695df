"""Query parameters (issue 21): field filters on the collections, and 400 for anything a route does not accept.

Both come from the routes' declarations (api/routemeta.py), the ones /openapi.json publishes and
the token check reads. The rules are docs/reference/api-queries.md's.
"""

import pytest

from resource_manager.api import openapi, routemeta
from resource_manager.schema import RESERVATION_STATES

from .support import ADMIN, OPERATOR, READER
from .test_bad_input import assert_refused, snapshot

FLEET = [
    {"hostname": "r1", "state": "needs_repair", "owner": "ci", "job_id": "build-1"},
    {"hostname": "r2", "state": "needs_repair", "owner": "tony", "job_id": "build-2"},
    {"hostname": "i1", "state": "idle", "owner": "ci", "job_id": "build-1"},
    {"hostname": "i2", "state": "idle"},
    {"hostname": "u1", "state": "in_use", "owner": "ci", "job_id": "build-1", "tags": {"cpucores": 8}},
    # Text that Eve would take for an ObjectId or a date in ?where: a filter compares it as text.
    {"hostname": "x1", "state": "in_use", "owner": "5f0c2a9e7b3d4c1e8a6f0b2d", "job_id": "2026-01-31T00:00:00Z"},
]


@pytest.fixture
def fleet(operator):
    response = operator.post("/machines", json=FLEET)
    assert response.status_code == 201, response.text
    for address, owner in (("192.0.2.1", "ci"), ("192.0.2.2", None), ("192.0.2.3", "tony")):
        assert operator.post("/public-addresses", json={"address": address, "owner": owner}).status_code == 201


def hostnames(response):
    assert response.status_code == 200, response.text
    return sorted(m["hostname"] for m in response.json()["_items"])


# -- the field filters ------------------------------------------------------------------------------

def test_state_lists_only_the_machines_in_that_state(anon, fleet):
    assert hostnames(anon.get("/machines", params={"state": "needs_repair"})) == ["r1", "r2"]
    assert hostnames(anon.get("/machines", params={"state": "pxe"})) == []


def test_filters_combine_with_each_other_and_with_where_by_and(anon, fleet):
    assert hostnames(anon.get("/machines", params={"owner": "ci"})) == ["i1", "r1", "u1"]
    assert hostnames(anon.get("/machines", params={"owner": "ci", "state": "idle"})) == ["i1"]
    assert hostnames(anon.get("/machines", params={"state": "needs_repair", "owner": "ci", "job_id": "build-1"})) \
        == ["r1"]
    where = '{"tags.cpucores": {"$gte": 4}}'
    assert hostnames(anon.get("/machines", params={"owner": "ci", "where": where})) == ["u1"]
    # Both must match, even when they name the same field.
    assert hostnames(anon.get("/machines", params={"state": "idle", "where": '{"state": "in_use"}'})) == []
    assert hostnames(anon.get("/machines", params={"state": "idle", "where": 'owner=="ci"'})) == ["i1"]


def test_a_filter_compares_text_as_text(anon, fleet):
    assert hostnames(anon.get("/machines", params={"owner": "5f0c2a9e7b3d4c1e8a6f0b2d"})) == ["x1"]
    assert hostnames(anon.get("/machines", params={"job_id": "2026-01-31T00:00:00Z"})) == ["x1"]
    assert hostnames(anon.get("/machines", params={"owner": "CI"})) == []  # exact, not case-folded


def test_addresses_filter_by_owner(anon, fleet):
    for resource in ("public-addresses", "private-addresses"):
        assert anon.get(f"/{resource}", params={"owner": "nobody"}).json()["_items"] == []
    found = anon.get("/public-addresses", params={"owner": "ci"}).json()["_items"]
    assert [a["address"] for a in found] == ["192.0.2.1"]
    assert_refused(anon.get("/public-addresses", params={"state": "idle"}), 400, "unknown query parameter ?state")


def test_pages_of_a_filtered_listing_count_and_link_the_filtered_items(anon, fleet):
    first = anon.get("/machines", params={"owner": "ci", "max_results": 2, "page": 1}).json()
    assert first["_meta"]["total"] == 3 and len(first["_items"]) == 2
    assert "owner=ci" in first["_links"]["next"]["href"]
    second = anon.get("/" + first["_links"]["next"]["href"].lstrip("/")).json()
    assert len(second["_items"]) == 1 and "next" not in second["_links"]
    assert sorted(m["hostname"] for m in first["_items"] + second["_items"]) == ["i1", "r1", "u1"]
    # The cached count of one filter is not another's.
    assert anon.get("/machines", params={"owner": "tony", "max_results": 2}).json()["_meta"]["total"] == 1


def test_head_and_the_client_library_take_the_filters(server, anon, fleet):
    assert anon.head("/machines", params={"state": "idle"}).status_code == 200
    assert anon.head("/machines", params={"state": "bogus"}).status_code == 400


def test_reservations_filter_as_before_and_refuse_a_state_they_never_have(operator, anon, fleet):
    assert operator.post("/machines", json={"hostname": "free-1", "state": "idle"}).status_code == 201
    made = operator.post("/reservations", json={"count": 1, "job_id": "j1"})
    assert made.status_code == 201
    assert [r["_id"] for r in anon.get("/reservations", params={"state": "active"}).json()["_items"]] \
        == [made.json()["_id"]]
    assert anon.get("/reservations", params={"state": "released"}).json()["_items"] == []
    body = assert_refused(anon.get("/reservations", params={"state": "bogus"}), 400, "?state must be one of")
    assert ", ".join(RESERVATION_STATES) in body["_error"]["message"]
    assert "'bogus'" in body["_error"]["message"]
    assert_refused(anon.get(f"/reservations/{made.json()['_id']}", params={"wait": 0, "state": "nope"}), 400,
                   "?state must be one of")


# -- what is refused, with 400 naming the parameter, changing nothing -------------------------------

@pytest.mark.parametrize(("path", "params", "needle"), [
    ("/machines", {"stat": "idle"}, "unknown query parameter ?stat for GET /machines"),
    ("/machines", {"state": "bogus"}, "?state must be one of pxe, pxe_failed, idle, in_use, needs_repair"),
    ("/machines", {"state": ""}, "?state is empty"),
    ("/machines", {"owner": ""}, "?owner is empty"),
    ("/machines", {"job_id": "a\0b"}, "query parameter 'job_id' holds a NUL character"),
    ("/machines", {"state": ["idle", "in_use"]}, "?state is given 2 times: give it once; for any of several"),
    ("/machines", {"where": ['{"state": "idle"}', "{}"]}, "?where is given 2 times"),
    ("/machines", {"embedded": "{}"}, "unknown query parameter ?embedded"),
    ("/machines/r1", {"state": "idle"}, "unknown query parameter ?state for GET /machines/{hostname}"),
    ("/public-addresses", {"owner": ""}, "?owner is empty"),
    ("/reservations", {"sort": "_created"}, "unknown query parameter ?sort for GET /reservations"),
    ("/reservations", {"job_id": ""}, "?job_id is empty"),
    ("/reservations", {"owner": ["a", "b"]}, "?owner is given 2 times"),
    ("/healthz", {"verbose": "1"}, "unknown query parameter ?verbose for GET /healthz; accepted: none"),
    ("/address-pools", {"kind": "public"}, "unknown query parameter ?kind"),
    ("/machines/r1/history", {"since": "x"}, "unknown query parameter ?since"),
    ("/metrics", {"name[]": "x"}, "unknown query parameter ?name[]"),
])
def test_a_query_parameter_a_route_does_not_take_is_400(anon, fleet, path, params, needle):
    assert_refused(anon.get(path, params=params), 400, needle)


def test_a_mistyped_parameter_on_a_write_changes_nothing(server, operator, fleet):
    before = snapshot(server.db)
    # ?dry-run (not dry_run) used to reserve for real.
    assert_refused(operator.post("/reservations?dry-run=1", json={"count": 1}), 400, "unknown query parameter ?dry-run")
    assert_refused(operator.delete("/reservations?job_id=build-1&jobid=x"), 400, "?jobid")
    etag = operator.get("/machines/i2").json()["_etag"]
    assert_refused(operator.patch("/machines/i2?owner=x", json={"owner": "y"}, headers={"If-Match": etag}), 400,
                   "unknown query parameter ?owner for PATCH /machines/{hostname}")
    assert snapshot(server.db) == before


def test_what_our_client_the_original_tool_and_the_dashboard_send_is_accepted(server, fleet):
    from resource_manager.clientlib.client import ResourceManagerClient

    with ResourceManagerClient("machines", server.url, *OPERATOR, environ={}) as client:
        assert client.count({"state": "idle"}) == 2  # page, max_results, where, projection
        assert [m["hostname"] for m in client.list({"owner": "tony"}, sort="hostname", fields=["hostname"])] == ["r2"]
        assert [m["hostname"] for m in client.find_resources(field="state", value="needs_repair")] == ["r1", "r2"]
        assert client.pools() == []  # GET /address-pools?page=1&max_results=1000
        assert client.reservations(state="queued", job_id="j", owner="o") == []
        assert client.history("r1")  # GET /machines/r1/history
    with server.session() as anon:
        for params in ({"q": "r", "state": "idle", "owner": "ci", "job": "b", "tag": "cpucores", "sort": "-state",
                        "per_page": "25", "page": "2"}, {"utm_source": "mail"}):
            assert anon.get("/", params=params).status_code == 200  # the dashboard's pages are not the API


# -- one declaration, read by the token check and the document ---------------------------------------

def test_the_operations_a_reserve_token_may_call_are_declared_once(server):
    routes = routemeta.table(server.app).routes()
    assert sorted(r.operation["operationId"] for r in routes if r.scope == "reserve") == [
        "allocate", "deletePrivateAddress", "deletePublicAddress", "extend", "heartbeat", "release", "releaseJob",
        "reserve"]
    assert sorted(r.operation["operationId"] for r in routes if r.scope == "admin") == [
        "createWebhook", "deletePool", "deleteWebhook", "getWebhook", "listWebhookDeliveries", "listWebhooks",
        "redeliverWebhook"]


def test_every_api_route_has_a_declaration(server):
    for rule in server.app.url_map.iter_rules():
        if rule.endpoint.startswith(("web.", "bootstrap.", "static", "home")) or rule.endpoint.endswith(
                "|item_post_override"):
            continue
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            assert routemeta.table(server.app).find(rule.rule, method) is not None, (method, rule.rule)


def test_the_document_publishes_what_is_checked(anon):
    spec = anon.get("/openapi.json").json()
    listing = {p.get("name"): p for p in spec["paths"]["/machines"]["get"]["parameters"]}
    assert listing["state"]["schema"]["enum"] == ["pxe", "pxe_failed", "idle", "in_use", "needs_repair"]
    assert (listing["owner"]["x-filter"], listing["job_id"]["x-filter"]) == ("owner", "job_id")
    states = {p["name"]: p for p in spec["paths"]["/reservations"]["get"]["parameters"]}["state"]
    assert states["schema"]["enum"] == list(RESERVATION_STATES)
    for path, item in spec["paths"].items():
        for method, op in item.items():
            if method != "parameters":
                assert "400" in op["responses"], (method, path)
    assert spec["paths"]["/address-pools/{name}"]["delete"]["x-token-scopes"] == ["admin"]
    assert spec["paths"]["/public-addresses/{address}"]["delete"]["x-token-scopes"] == ["reserve", "write", "admin"]


@pytest.mark.parametrize("auth", [READER, ADMIN])
def test_unknown_parameters_are_refused_whoever_asks(server, auth):
    with server.session(auth) as session:
        assert_refused(session.get("/tokens", params={"usr": "x"}), 400, "unknown query parameter ?usr")


def test_the_reference_page_shows_every_routes_parameters_and_scope(server):
    import os
    import re

    page = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "reference",
                        "api-queries.md")
    with open(page, encoding="utf-8") as fh:
        rows = re.findall(r"^\| `([A-Z]+) (/[^`]*)` \| (.*) \| (\w+) \|$", fh.read(), re.M)
    documented = {(method, path): (set(re.findall(r"`(\w+)`", params)), scope) for method, path, params, scope in rows}
    served = {routemeta.shape(p): m for p, m in openapi.rule_paths(server.app).items()}
    declared = {}
    for route in routemeta.table(server.app).routes():
        if route.method in served.get(routemeta.shape(route.path), ()):
            scope = "any" if route.operation.get("x-token-scopes") == ["read", "reserve", "write", "admin"] \
                else route.scope
            declared[(route.method.upper(), route.path)] = (set(route.query), scope)
    assert documented == declared
