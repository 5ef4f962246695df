"""The CLI's exit statuses and its usage error.

Each code's comment is its meaning: docs/reference/exit-codes.md is generated from them (python -m docgen).
"""

import enum


class ExitStatus(enum.IntEnum):
    """What the process exit code of rmctl (and ./client.py) means."""

    OK = 0  # the command did what was asked
    UNEXPECTED = 1  # a bug, or an error with no better code
    USAGE = 2  # the command line is wrong
    API_4XX = 4  # the server refused the request
    API_5XX = 5  # the server failed
    UNREACHABLE = 6  # cannot connect, or timed out
    NOT_GRANTED = 7  # reserve --wait: the wait ran out (or the queued request was cancelled); nothing reserved
    INTERRUPTED = 130  # Ctrl-C


class UsageError(Exception):
    """The command line is wrong (exit code 2)."""
