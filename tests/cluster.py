"""Several API server processes (gunicorn) sharing one database, for the concurrency proofs."""

import os
import signal
import socket
import subprocess
import sys
import time

import requests


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    """create_app() under gunicorn on 127.0.0.1, in a process group of its own."""

    def __init__(self, env, log_path, threads=8):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = open(log_path, "ab")  # closed in stop()
        argv = [sys.executable, "-m", "gunicorn", "--workers", "1", "--threads", str(threads),
                "--bind", f"127.0.0.1:{self.port}", "--log-level", "warning", "--graceful-timeout", "2",
                "resource_manager.app:create_app()"]
        self.proc = subprocess.Popen(argv, env=env, stdout=self._log, stderr=self._log, start_new_session=True)

    def wait_ready(self, timeout=60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server on {self.url} exited with {self.proc.returncode}")
            try:
                if requests.get(self.url + "/healthz", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"server on {self.url} did not become ready")

    def kill(self):
        """SIGKILL the server (master and worker): a crash, nothing cleaned up."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()


class Cluster:
    """`n` server processes over the database `dbname` of the embedded server at `uri`."""

    def __init__(self, uri, dbname, users_file, log_dir, n=2):
        env = dict(os.environ, MONGO_URI=uri, RM_MONGO_DBNAME=dbname, RM_USERS_FILE=users_file,
                   DO_NOT_TRACK="1", NO_PROXY="127.0.0.1,localhost")
        self.servers = []
        try:
            for i in range(n):
                # One at a time: the first creates the unique indexes before others serve.
                server = ServerProcess(env, os.path.join(log_dir, f"server{i}.log"))
                self.servers.append(server)
                server.wait_ready()
        except Exception:
            self.stop()
            raise

    @property
    def urls(self):
        return [s.url for s in self.servers]

    def stop(self):
        for server in self.servers:
            server.stop()
