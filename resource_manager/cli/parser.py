"""The argparse tree of rmctl / ./client.py, built from the commands' declarations (command.py)."""

import argparse
import sys

from .. import __version__
from ..schema import NAME_FIELDS
from .registry import COMMANDS  # noqa: F401  (the commands, by name: their one declaration is where they run)

RESOURCE_TYPES = tuple(NAME_FIELDS)

DESCRIPTION = """Manage ResourceManager machines and addresses from the shell.

Endpoint and credentials: --endpoint/--username/--password/--token, else RM_ENDPOINT/RM_USERNAME/
RM_PASSWORD/RM_TOKEN, else the config file ($RM_CONFIG or ~/.config/resource-manager/client.ini, section
[client]), else http://127.0.0.1:5000 with admin/admin. An API token, wherever it comes from, wins over
username and password (--token '' sends none).

Server restarts are ridden out: connection errors and 502/503/504 are retried (--max-retries, 5; none
later than --retry-time, 30 s, after the first failure; waits as Retry-After says, else from
--retry-backoff, 0.5 s, doubling), each retry noted on stderr. Only requests safe to repeat are repeated;
reserve and allocate-address carry an Idempotency-Key so a repeat never reserves twice."""

EPILOG = """examples:
  {prog} list
  {prog} list --state idle --sort hostname --fields hostname,owner
  {prog} list -r public-addresses --format csv > addresses.csv
  {prog} create hostname=a-15-r state=idle tags.memory:=17179869184
  {prog} update a-15-r owner=ci
  {prog} reserve --count 2 --lease 2h --job-id build-42 --format plain
  {prog} reserve --count 2 --wait 30m --job-id build-42 --format plain
  {prog} run --count 2 --job-id build-42 --wait 30m -- ./ci/test-on-hosts.sh
  {prog} import machines.csv
  {prog} token create --scope reserve --expires 90d --description jenkins

exit codes: 0 ok, 1 unexpected error, 2 usage, 4 refused by the API (4xx), 5 server error (5xx),
6 cannot connect or timed out, 7 reserve --wait not granted (the wait ran out, or the queued request
was cancelled): nothing reserved, 130 interrupted (Ctrl-C; reserve --wait cancels its queued request).
run exits with its command's status (128+n if signal n killed it, 126/127 if it could not start); the
codes above only when reserving failed and nothing ran"""


def _common(parser, top):
    # Options accepted before and after the command: old scripts put -r/-e after it.
    default = (lambda value: value) if top else (lambda value: argparse.SUPPRESS)
    parser.add_argument("-r", "--resource", choices=RESOURCE_TYPES, default=default("machines"),
                        help="resource type (default: machines)")
    parser.add_argument("-e", "--endpoint", default=default(None), help="API base URL (RM_ENDPOINT)")
    parser.add_argument("-u", "--username", default=default(None), help="user name (RM_USERNAME)")
    parser.add_argument("-p", "--password", default=default(None),
                        help="password (RM_PASSWORD; prefer the variable or the config file)")
    parser.add_argument("--token", default=default(None),
                        help="API token, sent instead of username/password (RM_TOKEN; prefer the variable or the "
                             "config file)")
    parser.add_argument("--timeout", type=float, default=default(None), help="seconds per request (RM_TIMEOUT)")
    parser.add_argument("--max-retries", type=_count, default=default(None), metavar="N",
                        help="retries after a connection error or 502/503/504 (RM_MAX_RETRIES, 5; 0: none)")
    parser.add_argument("--retry-time", type=_seconds, default=default(None), metavar="SECONDS",
                        help="no retry later than this after the first failure (RM_RETRY_TIME, 30)")
    parser.add_argument("--retry-backoff", type=_seconds, default=default(None), metavar="SECONDS",
                        help="first wait between retries, doubling, unless Retry-After says (RM_RETRY_BACKOFF, 0.5)")
    parser.add_argument("--debug", action="store_true", default=default(False), help="show tracebacks")


def _count(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {value}")
    return value


def _seconds(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {text}")
    return value


class Parser(argparse.ArgumentParser):
    """An ArgumentParser writing its help, version and usage errors to the streams it is given."""

    def __init__(self, *args, stdout=None, stderr=None, **kwargs):
        self.out, self.err = stdout, stderr
        super().__init__(*args, **kwargs)

    def _print_message(self, message, file=None):
        # argparse names sys.stdout for help and version, sys.stderr (or nothing) for errors.
        if message:
            if file is None or file is sys.stderr:
                (self.err or sys.stderr).write(message)
            else:
                (self.out or sys.stdout).write(message)


def build(prog, stdout=None, stderr=None):
    """Return the top-level parser, writing to ``stdout`` and ``stderr`` (default: the process's)."""
    parser = Parser(prog=prog, description=DESCRIPTION, epilog=EPILOG.format(prog=prog),
                    formatter_class=argparse.RawDescriptionHelpFormatter, stdout=stdout, stderr=stderr)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    _common(parser, top=True)
    _subcommands(parser, "command", "COMMAND", COMMANDS.values(), prog, stdout, stderr)
    return parser


def _subcommands(parser, dest, metavar, commands, prog, stdout, stderr):
    """Add the required subcommands of `commands` (Command declarations), their arguments and handlers."""
    sub = parser.add_subparsers(dest=dest, metavar=metavar)
    sub.required = True
    for command in commands:
        summary = command.summary
        p = sub.add_parser(command.name, help=summary, description=summary[0].upper() + summary[1:] + ".",
                           epilog=command.examples.format(prog=prog),
                           formatter_class=argparse.RawDescriptionHelpFormatter, stdout=stdout, stderr=stderr)
        _common(p, top=False)
        if command.arguments is not None:
            command.arguments(p)
        if command.actions:
            _subcommands(p, f"{command.name}_command", "ACTION", command.actions, prog, stdout, stderr)
        else:
            p.set_defaults(run=command.run)
