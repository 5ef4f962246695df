"""One rmctl command, declared in one place: its name, help, examples, arguments and handler.

A command module (commands.py, transfer.py, alloc.py, tokens.py) declares its commands in a
``COMMANDS`` tuple at its end; registry.py lists the modules; parser.py builds argparse from the
declarations and main.py runs the handler. See docs/reference/cli-internals.md.
"""

from collections.abc import Callable
from dataclasses import dataclass

OUTPUT_FORMATS = ("table", "json", "csv")


@dataclass(frozen=True)
class Command:
    """A command of rmctl (or an action of one: `rmctl token create`)."""

    name: str
    summary: str  # one line, lower case: the help listing's, and (capitalised) the command's description
    examples: str  # the help's epilog, "examples:\n  {prog} ...": {prog} is the program's name, {{ a brace
    arguments: Callable | None = None  # arguments(parser): add the command's options and positionals
    run: Callable | None = None  # run(client, args, env): do it; return an exit code, or None for 0
    actions: tuple = ()  # Commands of its own (`rmctl token create|list|revoke`), instead of `run`


def output_option(parser, extra=()):
    """Add -f/--format (table, json, csv and `extra`)."""
    parser.add_argument("-f", "--format", choices=OUTPUT_FORMATS + tuple(extra),
                        help="output format (default: table on a terminal, else json)")


def idempotency_option(parser, what):
    """Add --idempotency-key for a command that makes a `what` (reserve, allocation)."""
    parser.add_argument("--idempotency-key", metavar="KEY",
                        help=f"the same KEY again answers the same {what} instead of making another, "
                             "e.g. $BUILD_TAG when the whole job step may be re-run (default: a new key "
                             "per command, kept across its own retries)")
