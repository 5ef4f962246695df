"""localdb/orphans.py: a child started through the shim dies with its launcher, and execs in place."""

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from resource_manager.localdb.orphans import dying_with_us

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")

LAUNCHER = """
import subprocess, sys, time
from resource_manager.localdb.orphans import dying_with_us
argv, kwargs = dying_with_us(["/bin/sleep", "600"], 15)
child = subprocess.Popen(argv, **kwargs)
print(child.pid, flush=True)
time.sleep(600)
"""


def test_the_program_runs_in_place_of_the_shim():
    argv, kwargs = dying_with_us(["/bin/sh", "-c", "echo $$"], signal.SIGTERM)
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, **kwargs)
    assert proc.communicate(timeout=30)[0].strip() == str(proc.pid)  # exec'd: the same pid
    assert proc.returncode == 0


def test_sigkill_of_the_launcher_takes_the_child_with_it():
    launcher = subprocess.Popen([sys.executable, "-c", LAUNCHER], stdout=subprocess.PIPE, text=True)
    try:
        child = psutil.Process(int(launcher.stdout.readline()))
        deadline = time.monotonic() + 30
        while child.cmdline()[:1] != ["/bin/sleep"]:  # the shim has exec'd
            assert time.monotonic() < deadline
            time.sleep(0.01)
        launcher.kill()
        launcher.wait(timeout=30)
        child.wait(timeout=30)  # raises TimeoutExpired if it outlived its launcher
    finally:
        launcher.kill()
        launcher.wait(timeout=30)
        launcher.stdout.close()


def test_a_shim_whose_launcher_is_already_gone_runs_nothing(tmp_path):
    marker = tmp_path / "ran"
    argv, kwargs = dying_with_us(["/usr/bin/touch", str(marker)], signal.SIGTERM)
    parent_at = argv.index(str(os.getpid()))
    argv[parent_at] = "1"  # as if the launcher died before the flag was set: the shim's parent is not it
    result = subprocess.run(argv, capture_output=True, text=True, timeout=30, **kwargs)
    assert result.returncode == 1 and "the launcher is gone" in result.stderr
    assert not marker.exists()
