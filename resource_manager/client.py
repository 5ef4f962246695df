#!/usr/bin/env python3
"""The historic entry point: `from resource_manager.client import ResourceManagerClient`, and `./client.py ...`.

The library lives in resource_manager.clientlib, the CLI (rmctl) in resource_manager.cli.
"""
# ruff: noqa: E402

import os
import sys

if __name__ == "__main__":  # ./client.py: hand over to the CLI before loading anything heavy
    _here = os.path.dirname(os.path.abspath(__file__))
    # Our directory must not shadow top-level modules (config, settings, ...) of other packages.
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _here]
    sys.path.insert(0, os.path.dirname(_here))
    from resource_manager.cli import main

    sys.exit(main())

from .clientlib.client import *  # noqa: F403 - the public surface, re-exported as it always was
from .clientlib.client import __all__  # noqa: F401
