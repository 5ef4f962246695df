"""/openapi.json against what the server really serves: routes, body fields, states, status codes.

The status codes are those the whole test session produced: every LiveServer records each answer
its document does not list (support.UNDOCUMENTED), and test_every_status_sent_is_documented runs
last (conftest.py) to assert there was none. Under pytest-xdist (`make test`) each process sees only
its own servers: conftest.py's pytest_sessionfinish gathers every process's and fails the run.
"""

import pytest

from resource_manager.api import openapi
from resource_manager.api.openapi import BODY_SCHEMAS
from resource_manager.api.routes import reservations
from resource_manager.core.constraints import BODIES
from resource_manager.schema import MACHINE_STATES, RESERVATION_STATES

from . import support


@pytest.fixture
def spec(anon):
    response = anon.get("/openapi.json")
    assert response.status_code == 200
    return response.json()


def served(app):
    """Return {path shape: methods} of the app's API routes, every method but HEAD and OPTIONS."""
    found = {}
    for rule in app.url_map.iter_rules():
        if rule.endpoint.startswith(support.NOT_API) or rule.endpoint.endswith("|item_post_override"):
            continue
        for path in openapi.templates(rule.rule):
            found.setdefault(openapi.shape(path), set()).update(m.lower() for m in rule.methods - {"HEAD", "OPTIONS"})
    return found


def test_routes_and_methods_are_those_served(server, spec):
    documented = {openapi.shape(path): set(item) - {"parameters"} for path, item in spec["paths"].items()}
    assert documented == served(server.app)


def test_request_bodies_are_the_validated_schemas(server, spec):
    schemas = spec["components"]["schemas"]
    for ref, name in BODY_SCHEMAS.items():
        assert set(schemas[ref]["properties"]) == set(BODIES[name]), ref
        assert set(schemas[ref].get("required", [])) == {f for f, r in BODIES[name].items() if r.get("required")}
        assert schemas[ref]["additionalProperties"] is False
    assert "owner" not in schemas["ReservationRequest"].get("required", [])
    assert schemas["ReservationRequest"]["properties"]["count"]["maximum"] == 1000


def test_limits_in_the_document_are_this_servers(server, spec):
    assert server.app.config.get("ALLOCATION_MAX_COUNT") is None
    count = spec["components"]["schemas"]["AllocateRequest"]["properties"]["count"]
    assert (count["minimum"], count["maximum"], count["default"]) == (1, 1024, 1)


def test_states_and_reservation_fields(spec):
    schemas = spec["components"]["schemas"]
    assert schemas["Machine"]["properties"]["state"]["enum"] == list(MACHINE_STATES)
    assert schemas["MachineInput"]["properties"]["state"]["enum"] == list(MACHINE_STATES)
    assert schemas["Reservation"]["properties"]["state"]["enum"] == list(RESERVATION_STATES)
    assert set(schemas["Reservation"]["properties"]) == set(reservations.RENDERED_FIELDS)


def test_reservation_states_stored_are_documented(server, operator):
    # A pending reservation is a real state: one is stored before its machines are claimed.
    assert operator.post("/machines", json={"hostname": "m1", "state": "idle"}).status_code == 201
    rid = operator.post("/reservations", json={"count": 1}).json()["_id"]
    assert operator.delete(f"/reservations/{rid}").status_code == 200
    states = {r["state"] for r in operator.get("/reservations").json()["_items"]}
    assert states <= set(RESERVATION_STATES) and states == {"released"}


def test_every_status_sent_is_documented():
    """Runs last (conftest.py): every answer of every test server this session is in its document."""
    assert support.UNDOCUMENTED == {}
