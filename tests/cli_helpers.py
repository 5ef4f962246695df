"""Helpers for client and CLI tests: run the CLI in-process or as a subprocess, fake unreachable servers."""

import io
import os
import socket
import subprocess
import sys
from dataclasses import dataclass

from resource_manager.cli.main import Environment, main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE_DIR = os.path.join(ROOT, "resource_manager")


@dataclass
class Result:
    code: int
    out: str
    err: str


def run_cli(*argv, environ=None, stdin="", tty=False, config_dir=None):
    """Call main(argv, env) with captured streams; return exit code, stdout and stderr."""
    out, err = io.StringIO(), io.StringIO()
    env = Environment(stdin=io.StringIO(stdin), stdout=out, stderr=err, environ=dict(environ or {}),
                      config_dir=config_dir or os.devnull, stdout_isatty=tty, stderr_isatty=tty, prog="rmctl")
    code = main(list(argv), env)
    return Result(code, out.getvalue(), err.getvalue())


def subprocess_env(**extra):
    """Return an environment for a CLI subprocess: our Python first on PATH, no RM_* from outside."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RM_")}
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    env["NO_PROXY"] = "127.0.0.1,localhost"
    env["XDG_CONFIG_HOME"] = os.devnull  # no config file of the machine running the tests
    env.update(extra)
    return env


def shell(line, env, cwd=PACKAGE_DIR, timeout=60):
    """Run a shell command line verbatim; return exit code, stdout and stderr."""
    proc = subprocess.run(line, shell=True, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    return Result(proc.returncode, proc.stdout, proc.stderr)



class SilentServer:
    """A socket that accepts connections and never answers: requests to it time out."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def close(self):
        self.sock.close()
