"""ResourceManagerClient over real HTTP: the original API verbatim, the modern one, errors and config."""

import json

import pytest
import requests

from resource_manager.clientlib.client import (
    APIError,
    Forbidden,
    NotFound,
    PreconditionFailed,
    RequestFailureException,
    ResourceManagerClient,
    ResourceManagerError,
    TransportError,
    Unauthorized,
    ValidationError,
)
from resource_manager.clientlib.config import resolve

from .cli_helpers import SilentServer, run_cli
from .support import PASSWORDS, free_port, write_users_file


@pytest.fixture(scope="module")
def users_file(tmp_path_factory):
    """The test accounts plus admin/admin, the original tool's default credentials."""
    return write_users_file(str(tmp_path_factory.mktemp("users") / "users.json"), legacy_admin=True)


@pytest.fixture
def client(server):
    with ResourceManagerClient(endpoint=server.url, environ={}) as c:
        yield c


def test_original_script_runs_verbatim(server, monkeypatch, capsys):
    monkeypatch.setenv("RM_ENDPOINT", server.url)  # the only change: where the server is
    from resource_manager.clientlib.client import ResourceManagerClient
    client = ResourceManagerClient()                     # resource_type='machines', endpoint='http://127.0.0.1:5000', username='admin', password='admin'  # noqa: E501
    client.print_resources()
    client.create_resource('{"hostname": "h1", "state": "idle"}')    # a JSON string, as old scripts pass; a dict works too  # noqa: E501
    client.get_resource('h1')                             # by hostname/address; returns the document with _id and _etag  # noqa: E501
    client.update_resource('{"hostname": "h1", "owner": "ci"}')      # finds it by name, PATCHes with If-Match
    assert client.find_resources('state', 'idle')[0]["owner"] == "ci"
    client.delete_resource('{"hostname": "h1"}')
    client.find_resources('state', 'idle')                # filtered on the server, not by downloading everything
    client.get_all_resources()                            # every item, across pages
    assert client.get_all_resources() == []
    assert "hostname" in capsys.readouterr().out


def test_original_attributes_and_defaults(monkeypatch):
    c = ResourceManagerClient(environ={})
    assert (c.resource_type, c.endpoint, c.key) == ("machines", "http://127.0.0.1:5000/machines", "hostname")
    assert (c.base_url, c.username, c.password) == ("http://127.0.0.1:5000", "admin", "admin")
    assert c.auth == ("admin", "admin")
    assert c.fields == ["hostname", "owner", "state", "job_id", "tags", "_updated", "_id"]
    assert c.headers == {"content-type": "application/json"}
    addresses = ResourceManagerClient("public-addresses", "http://rm:5000", "u", "p", environ={})
    assert (addresses.key, addresses.auth) == ("address", ("u", "p"))
    assert addresses.endpoint == "http://rm:5000/public-addresses"
    assert addresses.fields == ["address", "owner", "tags", "_updated", "_id"] and addresses.base_url == "http://rm:5000"
    addresses.endpoint = "http://other:5000/public-addresses"  # the collection URL, as it reads
    assert addresses.base_url == "http://other:5000"
    with pytest.raises(ValueError, match="must end with '/public-addresses'"):
        addresses.endpoint = "http://other:5000"
    addresses.auth = ("v", "q")
    assert addresses.session.auth == ("v", "q")
    with pytest.raises(ValueError, match="unknown resource type"):
        ResourceManagerClient("printers")


def test_old_api_returns_documents_and_accepts_dicts(client, server):
    created = client.create_resource({"hostname": "h1", "state": "idle", "tags": {"memory": 16}})
    doc = client.get_resource("h1")
    assert doc["_id"] == created["_id"] and doc["_etag"] == created["_etag"] and doc["tags"] == {"memory": 16}
    updated = client.update_resource({"hostname": "h1", "owner": ""})
    assert updated["owner"] == "" and server.db.machines.find_one({"hostname": "h1"})["owner"] == ""
    client.delete_resource({"hostname": "h1"})
    assert server.db.machines.count_documents({}) == 0


def test_find_resources_filters_on_the_server(client, server):
    client.create_many([{"hostname": f"m{i}", "state": "idle" if i % 3 else "in_use"} for i in range(30)])
    seen = []
    client.session.hooks["response"].append(lambda r, *a, **k: seen.append(r.url))
    found = client.find_resources("state", "in_use")
    assert sorted(m["hostname"] for m in found) == sorted(f"m{i}" for i in range(0, 30, 3))
    assert len(seen) == 1 and "where=" in seen[0]


def test_iteration_walks_every_page(client):
    client.create_many([{"hostname": f"m{i:02d}", "state": "idle"} for i in range(25)], chunk_size=10)
    assert len(client.get_all_resources()) == 25
    pages = []
    client.session.hooks["response"].append(lambda r, *a, **k: pages.append(r.url))
    names = [m["hostname"] for m in client.iter(sort="hostname", page_size=10)]
    assert names == [f"m{i:02d}" for i in range(25)] and len(pages) == 3
    assert [m["hostname"] for m in client.iter(sort="-hostname", limit=3)] == ["m24", "m23", "m22"]
    assert client.count({"hostname": {"$in": ["m01", "m02", "nope"]}}) == 2
    assert set(client.list(fields=["hostname"], limit=1)[0]) >= {"hostname", "_id"}
    assert "state" not in client.list(fields=["hostname"], limit=1)[0]


def test_create_many_reports_each_bad_row_and_creates_the_rest(client, server):
    docs = [{"hostname": "a", "state": "idle"}, {"hostname": "b", "state": "broken"},
            {"hostname": "c", "state": "idle"}, {"hostname": "a", "state": "idle"}]
    results = client.create_many(docs)
    assert isinstance(results[1], ValidationError) and "state" in results[1].issues
    assert isinstance(results[3], ValidationError) and "not unique" in str(results[3].issues["hostname"])
    assert results[0]["_id"] and results[2]["_id"]
    assert sorted(d["hostname"] for d in server.db.machines.find()) == ["a", "c"]


def test_errors_carry_status_issues_and_response(client):
    with pytest.raises(NotFound) as e:
        client.get("nope")
    assert isinstance(e.value, RequestFailureException) and isinstance(e.value, APIError)
    assert e.value.status == 404 and e.value.response.status_code == 404
    assert str(e.value).startswith("404:{")  # the original's "status:text"
    with pytest.raises(ValidationError) as e:
        client.create({"hostname": "x y", "state": "idle"})
    assert "does not match" in str(e.value.issues["hostname"]) and e.value.status == 422
    reader = ResourceManagerClient(endpoint=client.base_url, username="reader", password=PASSWORDS["reader"],
                                   environ={})
    with pytest.raises(APIError) as e:
        reader.create({"hostname": "x", "state": "idle"})
    assert e.value.status == 403
    reader.close()


def test_update_with_a_stale_etag_fails_unless_retries_are_asked_for(client, server):
    first = client.create({"hostname": "h1", "state": "idle"})
    client.update("h1", {"owner": "someone"})
    with pytest.raises(PreconditionFailed):
        client.update("h1", {"owner": "me"}, etag=first["_etag"])
    assert client.get("h1")["owner"] == "someone"
    assert client.update("h1", {"owner": "me"}, etag=first["_etag"], retries=1)["owner"] == "me"


def test_modify_recomputes_the_change_from_the_version_it_applies_to(client, server):
    client.create({"hostname": "h1", "state": "idle", "tags": {"count": 0}})
    other = ResourceManagerClient(endpoint=client.base_url, environ={})
    calls = []

    def increment(doc):
        calls.append(doc["tags"]["count"])
        if len(calls) == 1:  # someone else writes between our read and our write
            other.update("h1", {"tags": {"count": 10}})
        return {"tags": {"count": doc["tags"]["count"] + 1}}

    assert client.modify("h1", increment, retries=2)["tags"]["count"] == 11
    assert calls == [0, 10]
    with pytest.raises(PreconditionFailed):
        client.modify("h1", lambda doc: other.update("h1", {"owner": "x"}) and {"owner": "y"}, retries=1)
    other.close()


def test_replace_and_delete(client, server):
    client.create({"hostname": "h1", "state": "idle", "owner": "ci"})
    doc = client.replace("h1", {"hostname": "h1", "state": "needs_repair"})
    assert doc["state"] == "needs_repair" and "owner" not in doc
    client.delete("h1")
    with pytest.raises(NotFound):
        client.delete("h1")


def test_addresses_by_any_spelling(server):
    with ResourceManagerClient("private-addresses", server.url, environ={}) as c:
        c.create({"address": "10.0.0.7"})
        assert c.get("10.0.0.7")["address"] == "10.0.0.7"
        assert c.update_resource('{"address": "10.0.0.7", "owner": "ci"}')["owner"] == "ci"
        c.delete_resource("10.0.0.7")
        assert c.list() == []


def test_connection_refused_and_timeout_are_transport_errors():
    port = free_port()
    client = ResourceManagerClient(endpoint=f"http://127.0.0.1:{port}", environ={}, max_retries=0)
    with pytest.raises(TransportError, match=f"cannot connect to http://127.0.0.1:{port}: connection refused$") as e:
        client.get_all_resources()
    assert isinstance(e.value, RequestFailureException) and e.value.response is None
    client.close()
    silent = SilentServer()
    try:
        client = ResourceManagerClient(endpoint=silent.url, timeout=0.3, environ={}, max_retries=0)
        with pytest.raises(TransportError, match="did not answer within 0.3 s$"):
            client.get("h1")
        client.close()
    finally:
        silent.close()


def test_one_session_with_a_default_timeout(client):
    assert isinstance(client.session, requests.Session) and client.timeout == 30
    assert client.session.auth == ("admin", "admin")


def test_config_precedence_argument_env_file_default(tmp_path):
    path = tmp_path / "client.ini"
    path.write_text("[client]\nendpoint = http://file:1\nusername = fileuser\npassword = filepw\ntimeout = 7\n"
                    "max_retries = 9\nretry_time = 90\nretry_backoff = 2\n")
    env = {"RM_ENDPOINT": "http://env:2", "RM_USERNAME": "envuser", "RM_RETRY_TIME": "120", "RM_TOKEN": "rm_env"}
    got = resolve({"endpoint": "http://arg:3", "retry_backoff": 0.25}, env, str(path))
    assert got == {"endpoint": "http://arg:3", "username": "envuser", "password": "filepw", "timeout": 7.0,
                   "max_retries": 9, "retry_time": 120.0, "retry_backoff": 0.25, "token": "rm_env"}
    assert resolve({"token": "rm_arg"}, env, str(path))["token"] == "rm_arg"
    with_token = tmp_path / "token.ini"
    with_token.write_text("[client]\ntoken = rm_file\n")
    assert resolve({}, {}, str(with_token))["token"] == "rm_file"
    assert resolve({}, {"RM_TOKEN": "rm_env"}, str(with_token))["token"] == "rm_env"
    defaults = resolve({}, {}, str(tmp_path / "missing.ini"))
    assert (defaults["max_retries"], defaults["retry_time"], defaults["retry_backoff"]) == (5, 30.0, 0.5)
    for name, value in (("RM_MAX_RETRIES", "-1"), ("RM_MAX_RETRIES", "2.5"), ("RM_RETRY_TIME", "soon"),
                        ("RM_RETRY_BACKOFF", "nan")):
        with pytest.raises(ValueError, match=name[3:].lower()):
            resolve({}, {name: value}, str(tmp_path / "missing.ini"))
    assert resolve({}, {}, str(tmp_path / "missing.ini"))["endpoint"] == "http://127.0.0.1:5000"
    # RM_CONFIG points at the file when no path is given.
    client = ResourceManagerClient(environ={"RM_CONFIG": str(path)})
    assert (client.base_url, client.username, client.timeout) == ("http://file:1", "fileuser", 7.0)
    client.close()
    path.write_text("not an ini file")
    with pytest.raises(ValueError, match="cannot read config file"):
        resolve({}, {}, str(path))


def test_a_server_answering_non_json_is_a_client_error():
    import http.server
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(b"<html>a proxy page</html>")

        def log_message(self, *args):
            pass

    httpd = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        client = ResourceManagerClient(endpoint=f"http://127.0.0.1:{httpd.server_port}", environ={})
        with pytest.raises(ResourceManagerError) as e:
            client.get("h1")
        assert "did not answer JSON (text/html)" in e.value.message and e.value.response.status_code == 200
        client.close()
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_json_strings_must_be_objects(client):
    with pytest.raises(ValueError):
        client.create_resource(json.dumps(["not", "an", "object"]))


@pytest.fixture
def small_body_server(overrides, localdb, dbname):
    """A server that refuses bodies over 4 kB (413)."""
    import pymongo

    from .support import LiveServer

    live = LiveServer({**overrides, "MAX_CONTENT_LENGTH": 4000})
    yield live
    live.stop()
    mongo = pymongo.MongoClient(localdb.uri)
    mongo.drop_database(dbname)
    mongo.close()


def test_create_many_halves_batches_the_server_finds_too_large(small_body_server):
    docs = [{"hostname": f"host-with-a-long-name-{i:04d}", "state": "idle"} for i in range(200)]
    assert len(json.dumps(docs)) > 4000
    with ResourceManagerClient(endpoint=small_body_server.url, username="operator",
                               password=PASSWORDS["operator"], environ={}) as c:
        results = c.create_many(docs)
    assert not [r for r in results if isinstance(r, Exception)]
    assert small_body_server.db.machines.count_documents({}) == 200


def test_endpoint_must_be_a_url():
    with pytest.raises(ValueError, match="must start with http"):
        ResourceManagerClient(endpoint="localhost:5000", environ={})


def test_not_found_says_what_and_401_403_are_typed(client, server):
    with pytest.raises(NotFound) as e:
        client.get("nope")
    assert e.value.message == "no machine 'nope'"  # not Flask's "The requested URL was not found..."
    with ResourceManagerClient("public-addresses", server.url, environ={}) as addresses:
        with pytest.raises(NotFound, match="no public address '192.0.2.99'"):
            addresses.get("192.0.2.99")
    with pytest.raises(NotFound) as e:
        client.call("GET", "/no-such-route")
    assert e.value.message == "no such route: /no-such-route"
    with ResourceManagerClient(endpoint=server.url, username="admin", password="wrong", environ={}) as wrong:
        with pytest.raises(Unauthorized) as e:
            wrong.create({"hostname": "x", "state": "idle"})
    assert isinstance(e.value, APIError) and e.value.status == 401
    with ResourceManagerClient(endpoint=server.url, username="reader", password=PASSWORDS["reader"],
                               environ={}) as reader:
        with pytest.raises(Forbidden) as e:
            reader.create({"hostname": "x", "state": "idle"})
    assert isinstance(e.value, APIError) and e.value.status == 403 and "role 'reader'" in e.value.message
    # The CLI: 4xx exits 4, as before, with the server's message.
    environ = {"RM_ENDPOINT": server.url}
    got = run_cli("get", "nope", environ=environ)
    assert (got.code, got.err) == (4, "rmctl: GET /machines/nope: 404 no machine 'nope'\n")
    assert run_cli("-u", "admin", "-p", "wrong", "create", "hostname=x", "state=idle", environ=environ).code == 4
    assert run_cli("-u", "reader", "-p", PASSWORDS["reader"], "create", "hostname=x", "state=idle",
                   environ=environ).code == 4
