"""The argparse tree of rmctl / ./client.py: commands, options and their examples."""

import argparse
import sys

from .. import __version__
from ..schema import NAME_FIELDS

RESOURCE_TYPES = tuple(NAME_FIELDS)
OUTPUT_FORMATS = ("table", "json", "csv")

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
  {prog} import machines.csv
  {prog} token create --scope reserve --expires 90d --description jenkins

exit codes: 0 ok, 1 unexpected error, 2 usage, 4 refused by the API (4xx), 5 server error (5xx),
6 cannot connect or timed out, 7 reserve --wait not granted (the wait ran out, or the queued request
was cancelled): nothing reserved, 130 interrupted (Ctrl-C; reserve --wait cancels its queued request)"""

ASSIGNMENTS_HELP = ("field=value pairs; field:=JSON for numbers, booleans, null, lists; "
                    "tags.memory:=16 sets one tag")

COMMANDS = {
    "list": ("list items (table on a terminal, JSON when piped)", """examples:
  {prog} list
  {prog} list --state idle --owner ''
  {prog} list --where '{{"tags.memory": {{"$gte": 17179869184}}}}' --sort -hostname
  {prog} list --fields hostname,state --format csv
  {prog} list -r private-addresses -e http://127.0.0.1:5000"""),
    "get": ("show one item by name (hostname or address)", """examples:
  {prog} get a-15-r
  {prog} get 10.0.0.7 -r private-addresses --format json"""),
    "create": ("create an item from --json or field=value pairs", """examples:
  {prog} create --json '{{"hostname":"my-machine", "owner": "tony", "state": "idle"}}'
  {prog} create hostname=my-machine state=idle tags.cpucores:=8
  {prog} create -r public-addresses address=203.0.113.7"""),
    "update": ("change fields of an item (PATCH with If-Match)", """examples:
  {prog} update --json '{{"hostname":"my-machine", "owner": ""}}'
  {prog} update my-machine owner=ci state=in_use
  {prog} update my-machine job_id:=null --retries 3"""),
    "delete": ("delete an item", """examples:
  {prog} delete my-machine
  {prog} delete --json '{{"hostname":"my-machine"}}'"""),
    "import": ("create or update items from a CSV or JSON-lines file",
               """Rows are matched by name (hostname/address): new ones are created in bulk,
existing ones updated when they differ. Empty CSV cells are left out; tags.<key> columns fill tags.
Prints a summary; each failed row is reported on stderr; exit code 4 when any row failed.

examples:
  {prog} import machines.csv
  {prog} import addresses.jsonl -r public-addresses
  {prog} export backup.csv && {prog} import backup.csv"""),
    "export": ("write every item (or those matching --where) to CSV, JSON or JSON lines", """examples:
  {prog} export machines.csv
  {prog} export --format jsonl --where '{{"state": "idle"}}' > idle.jsonl"""),
    "reserve": ("reserve idle machines (exclusive, with a lease)", """\
With --wait, a request that cannot be met now waits in line (by priority, then arrival; see the docs'
"Waiting in the queue") and blocks until granted, showing its place on stderr on a terminal;
exit code 7 when the wait runs out (nothing reserved); Ctrl-C cancels the queued request (exit 130).

examples:
  {prog} reserve --count 2 --lease 2h --job-id build-42
  hosts=$({prog} reserve --count 2 --wait 30m --lease 2h --job-id build-42 --format plain)
  hosts=$({prog} reserve --count 4 --where '{{"tags.cpucores": {{"$gte": 8}}}}' --format plain)
  {prog} reserve --count 2 --job-id "$BUILD_TAG" --idempotency-key "$BUILD_TAG-hosts"
  {prog} reserve --count 10 --dry-run"""),
    "release": ("release a reservation, or every reservation of a job", """examples:
  {prog} release 6650c0ffee0000000000abcd
  {prog} release --job-id build-42"""),
    "extend": ("extend the lease of a reservation", """examples:
  {prog} extend 6650c0ffee0000000000abcd --lease 4h"""),
    "why": ("say why a reservation waits and when it will run (or how it ended)", """A queued reservation: its
place in line, its priority, when it will start (the latest lease end it waits for, unless those leases
are extended), the reservations holding what it waits for and the requests ahead of it. Any other: its state,
lease and how it ended.

examples:
  {prog} why 6650c0ffee0000000000abcd
  {prog} why "$RM_RESERVATION_ID" --format json"""),
    "reservations": ("list reservations", """examples:
  {prog} reservations --state active
  {prog} reservations --state queued        # the queue: place, who, how many, constraints, since when
  {prog} reservations --job-id build-42 --format json"""),
    "allocate-address": ("allocate free addresses from a pool", """examples:
  {prog} allocate-address lab-public
  {prog} allocate-address lab-private --count 4 --format plain"""),
    "pools": ("list address pools and their utilisation", """examples:
  {prog} pools
  {prog} pools --format json"""),
    "history": ("show the change history of an item, newest first", """examples:
  {prog} history a-15-r
  {prog} history 203.0.113.7 -r public-addresses"""),
    "token": ("create, list and revoke API tokens", """examples:
  {prog} token create --scope reserve --expires 90d --description jenkins
  RM_TOKEN=$({prog} token create --scope reserve --expires 90d --format plain)
  {prog} token list
  {prog} token list --user ci-bot        (an admin sees everyone's, or one user's)
  {prog} token revoke 0123456789abcdef"""),
}

TOKEN_COMMANDS = {
    "create": ("create a token; it is printed once, never again", """Scopes: read; reserve (reserve, extend and
release machines, allocate and release addresses, nothing else); write (what an operator does); admin.
A token never does more than its user's role allows at the time it is used. Only a signed-in user (or a
token of scope admin) creates tokens; an admin also for another user (--user).

examples:
  {prog} token create --scope reserve --expires 90d --description jenkins
  {prog} token create --scope read --expires 2027-01-31 --format plain
  {prog} -u admin token create --scope reserve --user ci-bot --description nightly"""),
    "list": ("list your tokens (an admin: everyone's): scope, description, created, last used, expiry",
             """Never a secret: a token is shown once, when it is created.

examples:
  {prog} token list
  {prog} token list --user ci-bot --format json"""),
    "revoke": ("revoke a token: the next request with it is refused", """examples:
  {prog} token revoke 0123456789abcdef
  {prog} token revoke "$RM_TOKEN"        (a token revokes itself)"""),
}


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


def _idempotency(parser, what):
    parser.add_argument("--idempotency-key", metavar="KEY",
                        help=f"the same KEY again answers the same {what} instead of making another, "
                             "e.g. $BUILD_TAG when the whole job step may be re-run (default: a new key "
                             "per command, kept across its own retries)")


def _output(parser, extra=()):
    parser.add_argument("-f", "--format", choices=OUTPUT_FORMATS + tuple(extra),
                        help="output format (default: table on a terminal, else json)")


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
    commands = _subcommands(parser, "command", "COMMAND", COMMANDS, prog, stdout, stderr)

    p = commands["list"]
    p.add_argument("--where", help="Eve/MongoDB filter as JSON")
    p.add_argument("--sort", help="field to sort by; -field for descending; a,b for several")
    p.add_argument("--fields", help="comma-separated fields to show")
    p.add_argument("--state", help="machines in this state (shortcut for --where)")
    p.add_argument("--owner", help="items of this owner ('' for none)")
    p.add_argument("--limit", type=int, help="at most this many items")
    _output(p)

    p = commands["get"]
    p.add_argument("name", help="hostname, address or _id")
    _output(p)

    for name in ("create", "update", "delete"):
        p = commands[name]
        p.add_argument("--json", dest="json_doc", metavar="JSON",
                       help="the document as a JSON object" + (" naming the item" if name != "create" else ""))
    for name in ("create", "update", "delete"):
        commands[name].add_argument("--reason", help="why: kept in the item's history")
    commands["create"].add_argument("assignments", nargs="*", metavar="FIELD=VALUE", help=ASSIGNMENTS_HELP)
    commands["update"].add_argument("words", nargs="*", metavar="NAME FIELD=VALUE", help="the item, then "
                                    + ASSIGNMENTS_HELP)
    commands["update"].add_argument("--retries", type=int, default=0,
                                    help="re-read and retry this many times if the item changes meanwhile")
    commands["delete"].add_argument("name", nargs="?", help="hostname, address or _id")
    for name in ("create", "update"):
        _output(commands[name])

    p = commands["import"]
    p.add_argument("file", help="CSV, JSON lines or a JSON array; - for standard input")
    p.add_argument("--format", dest="file_format", choices=("csv", "jsonl", "json"),
                   help="file format (default: from the extension, else guessed from the content)")
    p.add_argument("--chunk-size", type=int, default=1000, help="documents per bulk request (default 1000)")

    p = commands["export"]
    p.add_argument("file", nargs="?", default="-", help="output file (default: standard output)")
    p.add_argument("--format", dest="file_format", choices=("csv", "jsonl", "json"),
                   help="file format (default: from the extension, else json)")
    p.add_argument("--where", help="Eve/MongoDB filter as JSON")

    p = commands["reserve"]
    p.add_argument("--count", type=int, required=True, help="how many machines")
    p.add_argument("--where", help="which machines qualify, as JSON")
    p.add_argument("--lease", help="lease length: 90s, 30m, 2h, 1d or seconds")
    p.add_argument("--job-id", help="the job the machines are for")
    p.add_argument("--owner", help="owner to record (default: your user name)")
    p.add_argument("--reason", help="free text kept in the history")
    p.add_argument("--wait", metavar="DURATION",
                   help="when not enough machines are free, wait in line this long (90s, 30m, 2h) "
                        "instead of failing; exit 7 if it runs out")
    p.add_argument("--priority", type=int, metavar="0-100",
                   help="place in the line: higher first (default 50; an operator may ask up to 50, an admin any)")
    p.add_argument("--dry-run", action="store_true", help="show what would be reserved, or when with --wait")
    _idempotency(p, "reserve")
    _output(p, extra=("plain",))

    p = commands["release"]
    p.add_argument("reservation", nargs="?", help="reservation id")
    p.add_argument("--job-id", help="release every reservation of this job")
    _output(p, extra=("plain",))

    p = commands["extend"]
    p.add_argument("reservation", help="reservation id")
    p.add_argument("--lease", required=True, help="new lease from now: 90s, 30m, 2h, 1d or seconds")
    _output(p)

    p = commands["why"]
    p.add_argument("reservation", help="reservation id")
    _output(p)

    p = commands["reservations"]
    p.add_argument("--job-id")
    p.add_argument("--owner")
    p.add_argument("--state", choices=("queued", "active", "released", "expired", "cancelled", "timed_out"),
                   help="queued: the queue, in arrival order")
    _output(p)

    p = commands["allocate-address"]
    p.add_argument("pool", help="address pool name")
    p.add_argument("--count", type=int, default=1)
    p.add_argument("--owner", help="owner to record (default: your user name)")
    _idempotency(p, "allocation")
    _output(p, extra=("plain",))

    _output(commands["pools"])

    p = commands["history"]
    p.add_argument("name", help="hostname or address")
    _output(p)
    _token_commands(commands["token"], prog, stdout, stderr)
    return parser


def _subcommands(parser, dest, metavar, table, prog, stdout, stderr):
    """Add the required subcommands of `table` ({name: (summary, examples)}); return their parsers by name."""
    sub = parser.add_subparsers(dest=dest, metavar=metavar)
    sub.required = True
    parsers = {}
    for name, (summary, examples) in table.items():
        parsers[name] = sub.add_parser(name, help=summary, description=summary[0].upper() + summary[1:] + ".",
                                       epilog=examples.format(prog=prog),
                                       formatter_class=argparse.RawDescriptionHelpFormatter,
                                       stdout=stdout, stderr=stderr)
        _common(parsers[name], top=False)
    return parsers


def _token_commands(parser, prog, stdout, stderr):
    actions = _subcommands(parser, "token_command", "ACTION", TOKEN_COMMANDS, prog, stdout, stderr)
    p = actions["create"]
    p.add_argument("--scope", required=True, choices=("read", "reserve", "write", "admin"))
    p.add_argument("--expires", help="lifetime (90d, 12h, seconds) or a date (2027-01-31); default: 90 days")
    p.add_argument("--description", help="what the token is for, e.g. the CI job")
    p.add_argument("--user", help="the user the token is for (admins only; default: you)")
    _output(p, extra=("plain",))
    p = actions["list"]
    p.add_argument("--user", help="only this user's tokens (admins; others see only their own)")
    _output(p)
    p = actions["revoke"]
    p.add_argument("token", metavar="ID", help="the token's id (or the token itself)")
