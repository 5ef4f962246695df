#!/usr/bin/env python3
"""The historic entry point: `from resource_manager.client import ResourceManagerClient`, and `./client.py ...`.

The library lives in resource_manager.clientlib, the CLI (rmctl) in resource_manager.cli.
"""
# ruff: noqa: E402

import os
import sys

NEEDS = ("requests", "prettytable")  # what the CLI imports beyond the standard library
REEXEC = "_RM_CLIENT_PY_REEXEC"


def _use_the_projects_python(root):
    """Run again with the checkout's .venv (make install) when this Python lacks what the CLI needs.

    `./client.py` runs the first python3 on PATH, often the system's, without requests.
    """
    import importlib.util

    missing = [name for name in NEEDS if importlib.util.find_spec(name) is None]
    if not missing:
        return
    venv_python = os.path.join(root, ".venv", "bin", "python")
    if os.access(venv_python, os.X_OK) and os.environ.get(REEXEC) != "1":
        os.environ[REEXEC] = "1"  # once: a venv that lacks them too gets the message below
        os.execv(venv_python, [venv_python, os.path.abspath(__file__), *sys.argv[1:]])
    sys.stderr.write(f"client.py: {sys.executable} lacks the Python package(s) {', '.join(missing)}. "
                     f"Run `make install` in {root} (./client.py then uses its .venv), or "
                     f"`pip install {' '.join(missing)}`, or use rmctl.\n")
    sys.exit(1)


if __name__ == "__main__":  # ./client.py: hand over to the CLI before loading anything heavy
    _here = os.path.dirname(os.path.abspath(__file__))
    _use_the_projects_python(os.path.dirname(_here))
    # Our directory must not shadow top-level modules (config, settings, ...) of other packages.
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _here]
    sys.path.insert(0, os.path.dirname(_here))
    from resource_manager.cli import main

    sys.exit(main())

from .clientlib.client import *  # noqa: F403 - the public surface, re-exported as it always was
from .clientlib.client import __all__  # noqa: F401
