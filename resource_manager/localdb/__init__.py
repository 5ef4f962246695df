"""The embedded MongoDB-compatible database: FerretDB over SQLite, in a small Go program.

`build()` compiles main.go with the local Go toolchain into an ignored cache
directory (once per source version); `LocalDB` starts it on a loopback port,
waits until it answers a ping, and stops it.
"""

from .launcher import LocalDB, LocalDBError, build

__all__ = ["LocalDB", "LocalDBError", "build"]
