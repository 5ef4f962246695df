"""Reads are open; writes need HTTP Basic credentials of an operator or admin."""

import json

from resource_manager.admin.users import main as users_main
from resource_manager.api import auth

MACHINE = {"hostname": "h1", "state": "idle"}


def test_anonymous_read_is_allowed(anon):
    assert anon.get("/machines").status_code == 200


def test_anonymous_write_is_401_with_a_challenge(anon, server):
    response = anon.post("/machines", json=MACHINE)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Basic")
    assert response.json()["_error"]["code"] == 401
    assert server.db.machines.count_documents({}) == 0


def test_bad_password_is_401(server):
    response = server.session(("operator", "wrong")).post("/machines", json=MACHINE)
    assert response.status_code == 401


def test_unknown_user_is_401(server):
    assert server.session(("nobody", "x")).post("/machines", json=MACHINE).status_code == 401


def test_reader_write_is_403_naming_the_role(reader, operator, server):
    response = reader.post("/machines", json=MACHINE)
    assert response.status_code == 403
    assert "reader" in response.json()["_error"]["message"]
    assert operator.post("/machines", json=MACHINE).status_code == 201
    for method in ("PATCH", "DELETE"):
        assert reader.write(method, "/machines/h1", json={"owner": "x"}).status_code == 403
    assert server.db.machines.find_one({"hostname": "h1"}).get("owner") is None


def test_admin_can_write(admin):
    assert admin.post("/machines", json=MACHINE).status_code == 201


def test_users_file_holds_hashes_not_passwords(tmp_path, capsys, monkeypatch):
    path = str(tmp_path / "users.json")
    monkeypatch.setattr("sys.stdin", __import__("io").StringIO("s3cret-pass\n"))
    assert users_main(["--file", path, "add", "ci-bot", "--role", "operator", "--password-stdin"]) == 0
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    assert "s3cret-pass" not in text
    record = json.loads(text)["users"]["ci-bot"]
    assert record["role"] == "operator"
    assert auth.UsersFile(path).verify("ci-bot", "s3cret-pass") is not None
    assert auth.UsersFile(path).verify("ci-bot", "wrong") is None
    assert users_main(["--file", path, "list"]) == 0
    assert "ci-bot\toperator" in capsys.readouterr().out
    assert users_main(["--file", path, "remove", "ci-bot"]) == 0
    assert auth.UsersFile(path).verify("ci-bot", "s3cret-pass") is None


def test_account_added_while_serving_works_without_restart(server, users_file):
    auth.set_user(users_file, "late", "late-pw-123", "operator")
    try:
        assert server.session(("late", "late-pw-123")).post("/machines", json=MACHINE).status_code == 201
    finally:
        auth.remove_user(users_file, "late")
