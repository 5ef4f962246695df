"""Several API server processes (gunicorn) sharing one database, for the concurrency proofs."""

import os

from bench.deployed import Gunicorn


class Cluster:
    """`n` gunicorn servers (one worker of 8 threads each) over the database `dbname` at `uri`."""

    def __init__(self, uri, dbname, users_file, log_dir, n=2):
        self.servers = []
        try:
            for i in range(n):
                # One at a time: the first creates the unique indexes before others serve.
                server = Gunicorn(uri, dbname, users_file, os.path.join(log_dir, f"server{i}.log"),
                                  workers=1, threads=8)
                self.servers.append(server)
                server.start()
        except Exception:
            self.stop()
            raise

    @property
    def urls(self):
        return [s.url for s in self.servers]

    def stop(self):
        for server in self.servers:
            server.stop()
