"""rm-sweep: expire leases, fail machines stuck in pxe, repair half-done work (for cron)."""

import argparse
import json
import sys

import pymongo.errors

from ..api.db import core
from ..app import create_app
from ..core.context import Actor, Policy
from ..core.sweep import sweep


def main(argv=None):
    """rm-sweep: expire leases, fail machines stuck in pxe (RM_PXE_TIMEOUT), repair half-done work (for cron)."""
    parser = argparse.ArgumentParser(prog="rm-sweep", description=main.__doc__)
    parser.add_argument("--grace", type=int, default=None,
                        help="repair only what is older than this many seconds (default: SWEEP_GRACE_SECONDS, "
                             f"{Policy().grace_seconds}); 0 is safe only when no server is serving requests")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)

    try:
        app = create_app()
        with app.app_context():
            app.extensions["rm_indexes"].ensure()
            result = sweep(core(app), args.grace, Actor("rm-sweep"))
            for client, _db in app.extensions["pymongo"].values():
                client.close()
    except RuntimeError as e:
        print(f"rm-sweep: {e}", file=sys.stderr)
        return 2
    except pymongo.errors.PyMongoError as e:
        print(f"rm-sweep: database unavailable: {e}", file=sys.stderr)
        return 6
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
