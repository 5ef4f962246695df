"""rm-check: report every broken invariant of machines, reservations and addresses (see core/check.py)."""

import argparse
import json
import sys

import pymongo.errors

from ..api.db import core
from ..app import create_app
from ..core.check import check

EXIT_CLEAN, EXIT_USAGE, EXIT_VIOLATIONS, EXIT_UNAVAILABLE = 0, 2, 3, 6


def main(argv=None):
    """rm-check: report broken invariants (exit 0 none, 3 some, 6 database unavailable)."""
    parser = argparse.ArgumentParser(prog="rm-check", description=main.__doc__)
    parser.add_argument("--grace", type=int, default=None,
                        help="work younger than this many seconds is in progress, not broken "
                             "(default: SWEEP_GRACE_SECONDS, 120; 0 once no server is serving)")
    parser.add_argument("--json", action="store_true", help="one JSON object per violation")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        app = create_app()
        with app.app_context():
            here = core(app)
            grace = here.policy.grace_seconds if args.grace is None else args.grace
            violations = check(here.db, grace)
    except RuntimeError as e:
        print(f"rm-check: {e}", file=sys.stderr)
        return EXIT_USAGE
    except pymongo.errors.PyMongoError as e:
        print(f"rm-check: database unavailable: {e}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    for v in violations:
        if args.json:
            print(json.dumps(v, default=str))
        else:
            fix = "repairable by the sweep" if v["repairable"] else "needs an operator"
            print(f"{v['invariant']}: {v['item']}: {v['detail']} ({fix})")
    print(f"rm-check: {len(violations)} violation(s)", file=sys.stderr)
    return EXIT_VIOLATIONS if violations else EXIT_CLEAN


if __name__ == "__main__":
    sys.exit(main())
