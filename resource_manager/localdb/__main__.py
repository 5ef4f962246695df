"""python -m resource_manager.localdb: build if needed, then run the embedded database in the foreground."""

import argparse
import os
import sys

from .launcher import LocalDBError, build


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m resource_manager.localdb", description=__doc__)
    parser.add_argument("--data-dir", default=os.environ.get("RM_DATA_DIR", "var") + "/db")
    parser.add_argument("--port", type=int, default=int(os.environ.get("RM_LOCALDB_PORT", "27017")))
    parser.add_argument("--build-only", action="store_true", help="build the binary, print its path, exit")
    args = parser.parse_args(argv)
    try:
        binary = build()
    except LocalDBError as e:
        print(f"localdb: {e}", file=sys.stderr)
        return 1
    if args.build_only:
        print(binary)
        return 0
    os.environ["DO_NOT_TRACK"] = "1"
    # exec: supervisord's signals reach the database itself.
    os.execv(binary, [binary, "-listen", f"127.0.0.1:{args.port}", "-data-dir", os.path.abspath(args.data_dir),
                      "-log-level", os.environ.get("RM_LOCALDB_LOG_LEVEL", "warn")])


if __name__ == "__main__":
    sys.exit(main())
