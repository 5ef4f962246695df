"""GET /openapi.json: valid OpenAPI 3, complete for every route, and true to real responses."""

import html
import re

import pytest
import requests
from openapi_schema_validator import OAS30Validator
from openapi_spec_validator import validate

from resource_manager.api import openapi

# Routes that are not API: pages, assets, and Eve's method-override twin of item URLs.
NOT_API = ("web.", "bootstrap.", "static", "home")


def matches(response, spec, ref):
    """Validate a JSON response body against a component schema of the document."""
    schema = {"$ref": f"#/components/schemas/{ref}", "components": spec["components"]}
    OAS30Validator(schema).validate(response.json())


@pytest.fixture
def spec(anon):
    response = anon.get("/openapi.json")
    assert response.status_code == 200
    return response.json()


def test_the_document_is_valid_openapi_3(spec):
    validate(spec)
    assert spec["openapi"].startswith("3.")


def test_every_api_route_and_method_is_documented(server, spec):
    documented = {openapi.shape(path): set(item) - {"parameters"} for path, item in spec["paths"].items()}
    for rule in server.app.url_map.iter_rules():
        if rule.endpoint.startswith(NOT_API) or rule.endpoint.endswith("|item_post_override"):
            continue
        methods = {m.lower() for m in rule.methods - {"HEAD", "OPTIONS"}}
        for path in map(openapi.shape, openapi.templates(rule.rule)):
            assert path in documented, f"{rule.rule} is not in /openapi.json"
            assert methods <= documented[path], f"{rule.rule}: {methods - documented[path]} undocumented"


def test_any_converters_become_one_path_per_choice():
    assert openapi.templates("/<any(machines, 'public-addresses'):resource>/<path:name>/history") == [
        "/machines/{name}/history", "/public-addresses/{name}/history"]


def test_reads_are_public_and_writes_need_basic_auth_or_a_token(spec):
    schemes = spec["components"]["securitySchemes"]
    assert (schemes["basicAuth"]["type"], schemes["basicAuth"]["scheme"]) == ("http", "basic")
    assert (schemes["bearerAuth"]["type"], schemes["bearerAuth"]["scheme"]) == ("http", "bearer")  # Swagger's Authorize
    machines = spec["paths"]["/machines"]
    assert machines["get"]["security"] == []
    assert machines["post"]["security"] == [{"basicAuth": []}, {"bearerAuth": []}]
    assert spec["paths"]["/reservations"]["post"]["x-token-scopes"] == ["reserve", "write", "admin"]
    assert spec["paths"]["/address-pools"]["post"]["x-token-scopes"] == ["write", "admin"]
    assert set(spec["paths"]["/tokens"]) == {"get", "post"} and "delete" in spec["paths"]["/tokens/{id}"]
    patch = spec["paths"]["/machines/{hostname}"]["patch"]
    assert {"$ref": "#/components/parameters/IfMatch"} in patch["parameters"]
    assert {"412", "428", "422"} <= set(patch["responses"])


def test_list_parameters_and_schema_constraints(spec):
    params = spec["paths"]["/machines"]["get"]["parameters"]
    names = {p["$ref"].rsplit("/", 1)[-1] if "$ref" in p else p["name"] for p in params}
    # Eve's query parameters, then the field filters (issue 21: ?state=, ?owner=, ?job_id=).
    assert names == {"where", "sort", "projection", "page", "max_results", "pretty", "state", "owner", "job_id"}
    machine = spec["components"]["schemas"]["MachineInput"]
    assert set(machine["required"]) == {"hostname", "state"}
    assert machine["properties"]["state"]["enum"] == ["pxe", "pxe_failed", "idle", "in_use", "needs_repair"]
    assert machine["properties"]["owner"]["nullable"] is True
    pattern = machine["properties"]["hostname"]["pattern"]
    assert re.search(pattern, "a-15-r.qa1.example.com") and not re.search(pattern, "bad host")


def test_real_responses_match_the_documented_schemas(spec, operator, anon):
    created = operator.post("/machines", json={"hostname": "m1", "state": "idle", "tags": {"rack": "a"}})
    assert created.status_code == 201
    matches(created, spec, "WriteResult")
    matches(anon.get("/machines"), spec, "MachineList")
    matches(anon.get("/machines/m1"), spec, "Machine")
    matches(anon.get("/healthz"), spec, "Health")
    invalid = operator.post("/machines", json={"hostname": "m2", "state": "bogus"})
    assert invalid.status_code == 422
    matches(invalid, spec, "Error")
    missing = anon.get("/machines/nope")
    assert missing.status_code == 404
    matches(missing, spec, "Error")


@pytest.mark.own_server  # adds routes to its app
def test_modules_register_fragments_only_for_routes_they_serve(server):
    server.app.add_url_rule("/extra", "extra", lambda: {"ok": True})
    fragment = {"get": {"operationId": "extra", "summary": "x", "tags": ["extra"], "responses": {
        "200": {"description": "ok"}}}}
    openapi.register(server.app, {"/extra": fragment, "/not-served": fragment})
    spec = requests.get(server.url + "/openapi.json", timeout=30).json()
    validate(spec)
    assert "/extra" in spec["paths"] and "/not-served" not in spec["paths"]


def test_docs_page_lists_every_path(server, spec):
    page = requests.get(server.url + "/docs", timeout=30)
    assert page.status_code == 200
    for path in spec["paths"]:
        assert f"<code class=\"text-break\">{path}</code>" in page.text, path


def test_docs_examples_are_runnable_shapes(server):
    page = html.unescape(requests.get(server.url + "/docs", timeout=30).text)
    assert f"curl -u USER:PASSWORD -X PATCH -H 'If-Match: VALUE' '{server.url}/machines/{{hostname}}'" in page
    assert """-d '{"hostname": "string", "state": "pxe"}'""" in page
