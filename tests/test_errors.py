"""The error funnel translates only the errors it knows; a bug of ours is a 500 with its traceback logged."""

import logging

import pymongo.errors
import pytest


def _bug_while_handling(kind):
    def view():
        try:
            raise kind("the database said no")
        except kind:
            return {}["a bug of ours"]

    view.__name__ = f"bug_in_{kind.__name__}"
    return view


@pytest.mark.own_server  # adds routes to its app
def test_a_bug_inside_a_database_error_handler_is_a_logged_500(server, anon, caplog):
    for kind in (pymongo.errors.OperationFailure, pymongo.errors.AutoReconnect):
        server.app.add_url_rule(f"/test-only/{kind.__name__}", view_func=_bug_while_handling(kind))
    with caplog.at_level(logging.INFO):
        query = anon.get("/test-only/OperationFailure?where={}")
        reconnect = anon.get("/test-only/AutoReconnect")
    for response in (query, reconnect):
        assert response.status_code == 500
        assert response.json()["_error"] == {"code": 500, "message": "internal server error",
                                             "request_id": response.headers["X-Request-Id"]}
    errors = [r for r in caplog.records if r.levelno == logging.ERROR and "unhandled error" in r.getMessage()]
    assert len(errors) == 2 and all(r.exc_info and r.exc_info[0] is KeyError for r in errors)


@pytest.mark.own_server  # adds routes to its app
def test_the_database_errors_we_know_are_still_translated(anon, server):
    def refused():
        raise pymongo.errors.OperationFailure("unknown operator: $nope")

    def away():
        raise pymongo.errors.AutoReconnect("connection closed")

    server.app.add_url_rule("/test-only/refused", view_func=refused)
    server.app.add_url_rule("/test-only/away", view_func=away)
    response = anon.get("/test-only/refused?where={}")
    assert response.status_code == 400
    assert response.json()["_error"]["message"] == "the database rejected the query: unknown operator: $nope"
    response = anon.get("/test-only/away")
    assert (response.status_code, response.headers["Retry-After"]) == (503, "5")
