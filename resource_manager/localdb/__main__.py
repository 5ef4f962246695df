"""python -m resource_manager.localdb: build if needed, then run the embedded database in the foreground.

It stops (FerretDB, then PostgreSQL) on SIGTERM or SIGINT, and exits with status 1 when either
dies, so that supervisord restarts the pair.
"""

import argparse
import logging
import os
import signal
import sys
import threading

from .launcher import ENGINES, LocalDB, LocalDBError, build, default_engine

DEFAULT_PORT = 27018


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m resource_manager.localdb", description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=os.environ.get("RM_DATA_DIR", "var") + "/db")
    # Not MongoDB's 27017: a MongoDB on the same host is no clash.
    parser.add_argument("--port", type=int, default=int(os.environ.get("RM_LOCALDB_PORT", str(DEFAULT_PORT))),
                        help=f"port on 127.0.0.1 (RM_LOCALDB_PORT; default {DEFAULT_PORT})")
    parser.add_argument("--engine", choices=ENGINES, help="storage (RM_LOCALDB_ENGINE; default postgresql)")
    parser.add_argument("--build-only", action="store_true", help="build the binary, print its path, exit")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ["DO_NOT_TRACK"] = "1"
    try:
        binary = build()
        if args.build_only:
            print(binary)
            return 0
        db = LocalDB(args.data_dir, port=args.port, engine=args.engine or default_engine())
        stopping = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stopping.set())
        db.start()
    except LocalDBError as e:
        print(f"localdb: {e}", file=sys.stderr)
        return 1
    storage = f"PostgreSQL at {db.postgres_url}" if db.postgres_url else f"SQLite files in {db.data_dir}"
    print(f"ready {db.uri} ({storage})", flush=True)
    try:
        while not stopping.wait(1.0):
            if not db.alive():
                print("localdb: a database process died; stopping", file=sys.stderr)
                return 1
        return 0
    finally:
        db.stop()


if __name__ == "__main__":
    sys.exit(main())
