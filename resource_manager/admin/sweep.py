"""rm-sweep: expire leases, fail machines stuck in pxe, repair half-done work (for cron, or --every N)."""

import argparse
import json
import signal
import sys
import threading
import time

import pymongo.errors

from ..api.db import core
from ..app import create_app
from ..core.context import Actor, Policy
from ..core.sweep import sweep


def main(argv=None):
    """rm-sweep: expire leases, fail machines stuck in pxe (RM_PXE_TIMEOUT), repair half-done work.

    Once (for cron), or with --every SECONDS again and again until SIGTERM or Ctrl-C (for supervisord):
    one JSON line per sweep on stdout; a sweep the database could not do is said on stderr, and the
    next one comes as planned.
    """
    parser = argparse.ArgumentParser(prog="rm-sweep", description=main.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--grace", type=int, default=None,
                        help="repair only what is older than this many seconds (default: SWEEP_GRACE_SECONDS, "
                             f"{Policy().grace_seconds}); 0 is safe only when no server is serving requests")
    parser.add_argument("--every", type=_seconds, default=None, metavar="SECONDS",
                        help="sweep every SECONDS until stopped (SIGTERM, Ctrl-C), instead of once")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)

    try:
        app = create_app()
    except RuntimeError as e:
        print(f"rm-sweep: {e}", file=sys.stderr)
        return 2
    try:
        if args.every is None:
            return _once(app, args.grace)
        return _every(app, args.grace, args.every)
    finally:
        for client, _db in app.extensions["pymongo"].values():
            client.close()


def _seconds(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, got {text}")
    return value


def _sweep(app, grace):
    with app.app_context():
        app.extensions["rm_indexes"].ensure()
        return sweep(core(app), grace, Actor("rm-sweep"))


def _once(app, grace):
    try:
        result = _sweep(app, grace)
    except pymongo.errors.PyMongoError as e:
        print(f"rm-sweep: database unavailable: {e}", file=sys.stderr)
        return 6
    print(json.dumps(result))
    return 0


def _every(app, grace, seconds):
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    print(f"rm-sweep: sweeping every {seconds:g} s until stopped", file=sys.stderr, flush=True)
    while not stop.is_set():
        started = time.monotonic()
        try:
            print(json.dumps({"at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **_sweep(app, grace)}),
                  flush=True)
        except pymongo.errors.PyMongoError as e:
            print(f"rm-sweep: database unavailable, next sweep in {seconds:g} s: {e}", file=sys.stderr, flush=True)
        stop.wait(max(0.0, seconds - (time.monotonic() - started)))
    print("rm-sweep: stopped", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
