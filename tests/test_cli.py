"""rmctl called in-process with main(argv, env) against the live server: commands, formats, exit codes."""

import csv
import io
import json

import pytest

from resource_manager import __version__
from resource_manager.cli.parser import COMMANDS

from .cli_helpers import SilentServer, run_cli
from .support import PASSWORDS, free_port


@pytest.fixture
def cli(server):
    """Run rmctl as the operator against the live server."""
    environ = {"RM_ENDPOINT": server.url, "RM_USERNAME": "operator", "RM_PASSWORD": PASSWORDS["operator"]}

    def run(*argv, **kwargs):
        return run_cli(*argv, environ={**environ, **kwargs.pop("environ", {})}, **kwargs)

    return run


@pytest.fixture
def machines(operator):
    docs = [{"hostname": "a1", "state": "idle", "owner": "ci", "tags": {"memory": 16}},
            {"hostname": "b2", "state": "in_use", "owner": "tony"},
            {"hostname": "c3", "state": "idle"}]
    assert operator.post("/machines", json=docs).status_code == 201


def test_list_is_json_when_piped_and_a_table_on_a_terminal(cli, machines):
    piped = cli("list")
    assert piped.code == 0 and sorted(m["hostname"] for m in json.loads(piped.out)) == ["a1", "b2", "c3"]
    table = cli("list", "--sort", "hostname", tty=True)
    lines = table.out.splitlines()
    assert "hostname" in lines[1] and "a1" in lines[3] and "memory=16" in lines[3]
    forced = cli("list", "--format", "json", tty=True)
    assert len(json.loads(forced.out)) == 3


def test_list_filters_sorts_and_picks_fields(cli, machines):
    result = cli("list", "--state", "idle", "--sort", "-hostname", "--fields", "hostname,owner", "--format", "csv")
    assert result.out == "hostname,owner\nc3,\na1,ci\n", result.err
    result = cli("list", "--where", '{"owner": "tony"}', "--format", "csv", "--fields", "hostname")
    assert result.out == "hostname\nb2\n"
    assert [m["hostname"] for m in json.loads(cli("list", "--owner", "", "--fields", "hostname").out)] == ["c3"]
    assert len(json.loads(cli("list", "--limit", "2").out)) == 2
    result = cli("list", "--fields", "hostname,tags.memory", "--sort", "hostname", "--limit", "1", "--format", "csv")
    assert result.out == "hostname,tags.memory\na1,16\n"
    table = cli("list", "--fields", "hostname,tags.memory", "--sort", "hostname", tty=True)
    assert "tags.memory" in table.out and "| 16 " in table.out
    rows = list(csv.DictReader(io.StringIO(cli("list", "--format", "csv", "--sort", "hostname").out)))
    assert rows[0] == {"hostname": "a1", "owner": "ci", "state": "idle", "tags.memory": "16"}


def test_get_create_update_delete_by_name(cli, server):
    created = cli("create", "hostname=h1", "state=idle", "tags.memory:=17179869184", "tags.rack=r1")
    assert created.code == 0, created.err
    assert json.loads(created.out)["_id"]
    got = json.loads(cli("get", "h1").out)
    assert got["tags"] == {"memory": 17179869184, "rack": "r1"}
    updated = cli("update", "h1", "owner=ci", "job_id:=null", "tags.cpucores:=8")
    assert updated.code == 0, updated.err
    doc = json.loads(updated.out)
    assert doc["owner"] == "ci" and doc["job_id"] is None and doc["tags"]["cpucores"] == 8
    assert doc["tags"]["rack"] == "r1"  # nested fields merge
    table = cli("get", "h1", tty=True)
    assert "| owner" in table.out and "ci" in table.out
    deleted = cli("delete", "h1")
    assert deleted.code == 0 and "deleted machines/h1" in deleted.err and deleted.out == ""
    assert server.db.machines.count_documents({}) == 0


def test_addresses_with_resource_flag_anywhere(cli, server):
    assert cli("-r", "public-addresses", "create", "address=203.0.113.7").code == 0
    assert cli("get", "203.0.113.7", "-r", "public-addresses").code == 0
    assert cli("update", "203.0.113.7", "owner=web", "--resource", "public-addresses").code == 0
    assert server.db.public_addresses.find_one()["owner"] == "web"


def test_update_retries_flag_and_json_with_name(cli, machines, server):
    result = cli("update", "--json", '{"hostname": "a1", "owner": "new"}', "--retries", "2")
    assert result.code == 0 and server.db.machines.find_one({"hostname": "a1"})["owner"] == "new"
    result = cli("update", "a1", "--json", '{"state": "needs_repair"}')
    assert result.code == 0 and server.db.machines.find_one({"hostname": "a1"})["state"] == "needs_repair"


@pytest.mark.parametrize(("argv", "message"), [
    (["frobnicate"], "invalid choice"),
    (["create"], "create needs --json"),
    (["create", "--json", "{nope"], "--json is not valid JSON"),
    (["create", "--json", "[1]"], "--json must be a JSON object"),
    (["create", "hostname"], "expected field=value"),
    (["create", "tags.memory:=sixteen"], "tags.memory:= needs a JSON value"),
    (["update", "h1"], "update needs something to change"),
    (["update", "owner=x"], "update needs the item"),
    (["delete"], "delete needs the item"),
    (["list", "--where", "state=idle"], "--where is not valid JSON"),
    (["list", "-r", "public-addresses", "--state", "idle"], "--state applies to machines only"),
    (["list", "--limit", "many"], "invalid int value"),
    (["list", "-e", "localhost:5000"], "endpoint must start with http:// or https://"),
])
def test_usage_errors_exit_2_with_one_line(cli, argv, message):
    result = cli(*argv)
    assert result.code == 2
    assert message in result.err
    assert "Traceback" not in result.err


def test_not_found_is_exit_4(cli):
    result = cli("get", "nope")
    assert (result.code, result.err) == (4, "rmctl: GET /machines/nope: 404 no machine 'nope'\n")


def test_validation_error_spells_out_the_fields(cli, server):
    result = cli("create", "hostname=bad name", "state=broken")
    assert result.code == 4
    assert result.err.startswith("rmctl: POST /machines: 422 invalid: ")
    assert "hostname: value does not match regex" in result.err and "state: unallowed value broken" in result.err
    assert result.err.count("\n") == 1


def test_duplicate_name_is_exit_4(cli, machines):
    result = cli("create", "hostname=a1", "state=idle")
    assert (result.code, result.err) == (4, "rmctl: POST /machines: 409 duplicate hostname 'a1': it exists already\n")


def test_wrong_password_is_401_with_a_hint(cli):
    result = cli("create", "hostname=h1", "state=idle", environ={"RM_PASSWORD": "wrong"})
    assert result.code == 4
    assert "401" in result.err and "check the credentials" in result.err and "RM_USERNAME/RM_PASSWORD" in result.err


def test_reader_is_403_with_a_hint(cli):
    result = cli("create", "hostname=h1", "state=idle", "-u", "reader", "-p", PASSWORDS["reader"])
    assert result.code == 4
    assert "403" in result.err and "user 'reader' lacks the role" in result.err


def test_cannot_connect_names_the_endpoint_exit_6():
    port = free_port()
    result = run_cli("list", "-e", f"http://127.0.0.1:{port}", "--max-retries", "0")
    assert result.code == 6
    assert result.err == f"rmctl: cannot connect to http://127.0.0.1:{port}: connection refused\n"


def test_timeout_is_exit_6():
    silent = SilentServer()
    try:
        result = run_cli("list", "-e", silent.url, "--timeout", "0.3", "--max-retries", "1", "--retry-backoff", "0")
    finally:
        silent.close()
    assert result.code == 6
    notice, error = result.err.splitlines()
    assert notice == "rmctl: GET /machines: no answer in time; retry 1 of 1 in 0.0 s"
    assert error.startswith(f"rmctl: {silent.url} did not answer within 0.3 s (gave up after 1 retry in ")


def test_server_error_is_exit_5(localdb, users_file):
    from .support import LiveServer

    dead = f"mongodb://127.0.0.1:{free_port()}/"
    live = LiveServer({"MONGO_URI": dead, "MONGO_DBNAME": "x", "USERS_FILE": users_file,
                       "MONGO_OPTIONS": {"connect": False, "serverSelectionTimeoutMS": 200}})
    try:
        result = run_cli("list", "-e", live.url, "--max-retries", "0")
    finally:
        live.stop()
    assert result.code == 5 and "503" in result.err


def test_debug_shows_the_traceback(cli):
    assert "Traceback" in cli("get", "nope", "--debug").err
    assert "Traceback" in cli("--debug", "get", "nope").err


def test_unexpected_answer_is_exit_1():
    import http.server
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"surprise")

        def log_message(self, *args):
            pass

    httpd = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        result = run_cli("list", "-e", f"http://127.0.0.1:{httpd.server_port}")
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert result.code == 1 and "did not answer JSON" in result.err and "Traceback" not in result.err


def test_bad_config_file_is_a_usage_error(tmp_path):
    (tmp_path / "client.ini").write_text("garbage")
    result = run_cli("list", config_dir=str(tmp_path))
    assert result.code == 2 and "cannot read config file" in result.err


def test_config_file_supplies_endpoint_and_credentials(server, tmp_path, machines):
    (tmp_path / "client.ini").write_text(f"[client]\nendpoint = {server.url}\nusername = operator\n"
                                         f"password = {PASSWORDS['operator']}\n")
    assert run_cli("update", "a1", "owner=x", config_dir=str(tmp_path)).code == 0
    # The environment wins over the file, the flag over both.
    result = run_cli("list", config_dir=str(tmp_path), environ={"RM_ENDPOINT": f"http://127.0.0.1:{free_port()}",
                                                                "RM_MAX_RETRIES": "0"})
    assert result.code == 6
    result = run_cli("list", "-e", server.url, config_dir=str(tmp_path),
                     environ={"RM_ENDPOINT": f"http://127.0.0.1:{free_port()}"})
    assert result.code == 0


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_has_help_with_examples(command):
    result = run_cli(command, "--help")
    assert result.code == 0
    assert "examples:" in result.out and f"rmctl {command}" in result.out


def test_top_level_help_and_version():
    result = run_cli("--help")
    assert result.code == 0 and "exit codes:" in result.out and "examples:" in result.out
    result = run_cli("--version")
    assert (result.code, result.out) == (0, f"rmctl {__version__}\n")
    assert run_cli().code == 2


def test_version_does_not_import_requests():
    import subprocess
    import sys

    code = ("import sys; from resource_manager.cli.main import main; rc = main(['--version']); "
            "print(sorted(m for m in ('requests', 'prettytable', 'urllib3') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().endswith("[]")


def test_interrupt_is_exit_130(server):
    import signal
    import subprocess
    import sys

    from .cli_helpers import subprocess_env

    silent = SilentServer()
    # ^C as at a terminal: a run started in the background (cmd &) inherits SIGINT ignored, and Python
    # then raises no KeyboardInterrupt.
    proc = subprocess.Popen([sys.executable, "-m", "resource_manager.cli.main", "list", "-e", silent.url],
                            env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    conn = None
    try:
        # Wait until it has sent its whole request (so it waits for the answer), then press ^C.
        conn, _ = silent.sock.accept()
        conn.settimeout(30)
        sent = b""
        while b"\r\n\r\n" not in sent:
            chunk = conn.recv(4096)
            assert chunk, "the client closed the connection before asking"
            sent += chunk
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if conn is not None:
            conn.close()
        if proc.poll() is None:  # it did not stop: kill it and close its pipes (they would leak into later tests)
            proc.kill()
            proc.communicate()
        silent.close()
    assert proc.returncode == 130 and err.strip().endswith("interrupted")


def test_hostnames_are_listed_in_natural_order(cli, operator):
    # n2 before n10, as people count (the database sorts n10 first); reserved names print so too.
    assert operator.post("/machines", json=[{"hostname": h, "state": "idle", "owner": "o" + h[1:]}
                                            for h in ("n10", "n2", "n1", "n100", "n0", "n20", "n3")]).status_code == 201
    natural = ["n0", "n1", "n2", "n3", "n10", "n20", "n100"]
    listed = cli("list", "--sort", "hostname", "--format", "json")
    assert [m["hostname"] for m in json.loads(listed.out)] == natural
    listed = cli("list", "--sort", "-hostname", "--limit", "3", "--fields", "hostname", "--format", "json")
    assert [m["hostname"] for m in json.loads(listed.out)] == ["n100", "n20", "n10"]
    listed = cli("list", "--sort", "state,-owner", "--format", "json")
    assert [m["hostname"] for m in json.loads(listed.out)] == natural[::-1]
    reserved = cli("reserve", "--count", "7", "--format", "plain")
    assert reserved.code == 0 and reserved.out.split() == natural
