"""Fuzzing: schemathesis generates requests from our /openapi.json and sends them to the live server.

Every operation, with and without credentials: no 5xx, no status code, content type or body that
the document does not describe. Deterministic (derandomized) so that a failure reproduces; a failure
found here becomes a named regression test in test_bad_input.py. More examples: `make soak`.
"""

import collections

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import checks

from resource_manager.api import openapi
from resource_manager.app import create_app

from .support import ADMIN, OPERATOR, READER, seeded_server

CHECKS = [checks.not_a_server_error, checks.status_code_conformance, checks.content_type_conformance,
          checks.response_schema_conformance]
SEEDS = [("/machines", {"hostname": "seed-1", "state": "idle", "tags": {"memory": 17179869184}}),
         ("/public-addresses", {"address": "192.0.2.10"}), ("/private-addresses", {"address": "10.0.0.10"})]
OFFLINE = {"MONGO_URI": "mongodb://127.0.0.1:9/", "MONGO_OPTIONS": {"connect": False, "serverSelectionTimeoutMS": 1}}


def _document():
    # The document the server serves, built at collection time: schemathesis' lazy loader
    # (from_fixture) does not work with pytest 9, so the live one is compared in a test below.
    app = create_app(OFFLINE)
    with app.test_request_context():
        document = openapi.document(app)
        for client, _db in app.extensions["pymongo"].values():
            client.close()
    return document


DOCUMENT = _document()
schema = schemathesis.openapi.from_dict(DOCUMENT)


STATUSES = collections.Counter()  # what the fuzzed requests got, printed at the end (pytest -s)


def fuzz_settings(examples):
    return settings(max_examples=examples, derandomize=True, deadline=None, database=None,
                    suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def fuzz_server(localdb, users_file):
    # Streams end at once (a fuzzed GET /events would otherwise hold its request for a minute); webhooks
    # may only point at this host.
    with seeded_server(localdb.uri, users_file, "fuzz", SEEDS, ADMIN, AUTH_MAX_FAILURES=10**6,
                       SECRET_KEY="fuzz-secret", EVENTS_STREAM_SECONDS=0.5, WEBHOOK_ALLOW="127.0.0.1") as live:
        yield live
    print(f"\nfuzzing: {sum(STATUSES.values())} requests; status codes: {dict(sorted(STATUSES.items()))}")


def test_the_fuzzed_document_is_the_served_one(fuzz_server):
    with fuzz_server.session() as anon:
        assert anon.get("/openapi.json").json() == DOCUMENT


def call(case, server, auth):
    response = case.call_and_validate(base_url=server.url, checks=CHECKS, auth=auth, timeout=30)
    STATUSES[response.status_code] += 1


# make test: a few examples per operation and role; make soak: a few thousand requests in all.
@schema.parametrize()
@fuzz_settings(8)
def test_fuzz_anonymous(case, fuzz_server):
    call(case, fuzz_server, None)


@schema.parametrize()
@fuzz_settings(8)
def test_fuzz_operator(case, fuzz_server):
    call(case, fuzz_server, OPERATOR)


@schema.parametrize()
@fuzz_settings(3)
def test_fuzz_reader(case, fuzz_server):
    call(case, fuzz_server, READER)


@pytest.mark.slow
@schema.parametrize()
@fuzz_settings(60)
def test_fuzz_anonymous_at_length(case, fuzz_server):
    call(case, fuzz_server, None)


@pytest.mark.slow
@schema.parametrize()
@fuzz_settings(60)
def test_fuzz_admin_at_length(case, fuzz_server):
    call(case, fuzz_server, ADMIN)
