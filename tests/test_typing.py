"""The client library ships typed: py.typed in the wheel, and mypy --strict finds a misuse in a script using it."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MYPY = os.path.join(os.path.dirname(sys.executable), "mypy")

SCRIPT = """
from resource_manager.client import ResourceManagerClient

with ResourceManagerClient("machines") as rm:
    hosts: list[str] = [m["hostname"] for m in rm.list({"state": "idle"})]
    reservation = rm.reserve(2, job_id="build-42", lease_seconds=3600)
    rm.release(reservation["_id"])
    rm.reserve("two")
"""


def test_the_package_carries_py_typed(tmp_path):
    # What setuptools puts in a wheel or an install: the package data of pyproject.toml.
    subprocess.run([sys.executable, "setup.py", "-q", "build_py", "--build-lib", str(tmp_path)], cwd=ROOT, check=True,
                   capture_output=True, timeout=300)
    assert (tmp_path / "resource_manager" / "py.typed").is_file()
    assert (tmp_path / "resource_manager" / "clientlib" / "client.py").is_file()


def test_a_script_misusing_the_client_fails_its_type_check(tmp_path):
    script = tmp_path / "ci_job.py"
    script.write_text(SCRIPT)
    # --follow-imports=silent: errors inside the package are not the script's, as for an installed package.
    result = subprocess.run([MYPY, "--strict", "--no-incremental", "--follow-imports=silent", str(script)],
                            capture_output=True, text=True, cwd=ROOT, env=dict(os.environ, MYPYPATH=ROOT), timeout=300)
    assert result.returncode == 1, result.stdout
    assert 'ci_job.py:8: error: Argument 1 to "reserve" of "AllocationMixin" has incompatible type "str"' \
        in result.stdout
    assert result.stdout.count("error:") == 1, result.stdout
