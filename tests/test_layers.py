"""The layers' import contracts (pyproject.toml, checked by `make lint`) hold, and catch a wrong-way import."""

import os
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LINT_IMPORTS = os.path.join(os.path.dirname(sys.executable), "lint-imports")


def lint_imports(root):
    env = dict(os.environ, PYTHONPATH=root)
    return subprocess.run([LINT_IMPORTS, "--no-cache"], cwd=root, env=env, capture_output=True, text=True, timeout=120)


def copy_of_the_package(tmp_path):
    shutil.copytree(os.path.join(ROOT, "resource_manager"), tmp_path / "resource_manager",
                    ignore=shutil.ignore_patterns(".build", "__pycache__"))
    shutil.copy(os.path.join(ROOT, "pyproject.toml"), tmp_path / "pyproject.toml")
    return tmp_path


def test_the_layers_hold():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout


def test_core_importing_the_api_breaks_a_contract(tmp_path):
    root = copy_of_the_package(tmp_path)
    with open(root / "resource_manager" / "core" / "claims.py", "a", encoding="utf-8") as fh:
        fh.write("\nfrom ..api import db  # noqa: E402,F401\n")
    result = lint_imports(str(root))
    assert result.returncode == 1
    assert "Server layers: schema <- core <- api <- web <- app <- admin/server BROKEN" in result.stdout


def test_the_client_importing_the_server_breaks_a_contract(tmp_path):
    root = copy_of_the_package(tmp_path)
    with open(root / "resource_manager" / "clientlib" / "config.py", "a", encoding="utf-8") as fh:
        fh.write("\nfrom ..core import allocation  # noqa: E402,F401\n")
    result = lint_imports(str(root))
    assert result.returncode == 1
    assert "The client side never imports the server side BROKEN" in result.stdout
