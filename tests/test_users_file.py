"""The users file's store (core/users.py): Werkzeug's hash format both ways, and rm-users without Flask or Eve."""

import subprocess
import sys

import pytest
from werkzeug.security import check_password_hash, generate_password_hash

from resource_manager.core import users

from .test_layers import copy_of_the_package, lint_imports


def test_our_hashes_are_werkzeugs_format_and_werkzeug_reads_them():
    stored = users.hash_password("s3cret-pass")
    assert stored.startswith("scrypt:32768:8:1$") and len(stored.split("$")[1]) == users.SALT_LENGTH
    assert check_password_hash(stored, "s3cret-pass") and not check_password_hash(stored, "s3cret-pasS")
    assert users.hash_password("s3cret-pass") != stored  # salted


@pytest.mark.parametrize("method", ["scrypt", "scrypt:16384:8:1", "pbkdf2:sha256:1000", "pbkdf2:sha512:2000"])
def test_hashes_werkzeug_wrote_still_verify(method):
    stored = generate_password_hash("old-pw-123", method=method)
    assert users.check_password(stored, "old-pw-123")
    assert not users.check_password(stored, "old-pw-124")


@pytest.mark.parametrize("stored", ["", "plain", "md5$salt$abc", "scrypt:x:8:1$salt$ab", "pbkdf2$salt$ab", "$$"])
def test_a_hash_in_no_known_format_matches_nothing(stored):
    assert users.check_password(stored, "anything") is False


def test_a_users_file_round_trips_and_verifies(tmp_path):
    path = str(tmp_path / "users.json")
    users.set_user(path, "ci-bot", "s3cret-pass", "operator")
    record = users.read_users(path)["ci-bot"]
    assert record["role"] == "operator" and len(record["uid"]) == 16
    store = users.UsersFile(path)
    assert store.verify("ci-bot", "s3cret-pass")["role"] == "operator"
    assert store.verify("ci-bot", "wrong") is None and store.verify("nobody", "s3cret-pass") is None
    assert (tmp_path / "users.json").stat().st_mode & 0o777 == 0o600
    with pytest.raises(ValueError):
        users.set_user(path, "x", "pw-123456", "superuser")


def test_rm_users_imports_neither_flask_nor_eve():
    code = ("import sys, resource_manager.admin.users; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'flask', 'eve', 'werkzeug', 'cerberus'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_rm_users_importing_the_api_breaks_a_contract(tmp_path):
    root = copy_of_the_package(tmp_path)
    with open(root / "resource_manager" / "admin" / "users.py", "a", encoding="utf-8") as fh:
        fh.write("\nfrom ..api import auth  # noqa: E402,F401\n")
    result = lint_imports(str(root))
    assert result.returncode == 1
    assert "rm-users edits a JSON file: no Flask, no Eve BROKEN" in result.stdout
