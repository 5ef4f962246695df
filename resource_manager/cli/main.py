"""rmctl (and ./client.py): the command line of ResourceManager, with one error funnel for exit codes."""

import os
import sys

from .. import __version__  # noqa: F401  (cheap: the package __init__ is one line
from .status import ExitStatus, UsageError

__all__ = ["Environment", "ExitStatus", "UsageError", "main"]


class Environment:
    """What the CLI touches of the outside world, injectable so tests can call main(argv, env).

    Read-only to the commands: what one command learns (its client, its credentials) is passed
    along, never stored here.
    """

    def __init__(self, stdin=None, stdout=None, stderr=None, environ=None, config_dir=None,
                 stdout_isatty=None, stderr_isatty=None, prog=None):
        self.stdin = stdin or sys.stdin
        self.stdout = stdout or sys.stdout
        self.stderr = stderr or sys.stderr
        self.environ = os.environ if environ is None else environ
        self.config_dir = config_dir
        self.stdout_isatty = _isatty(self.stdout) if stdout_isatty is None else stdout_isatty
        self.stderr_isatty = _isatty(self.stderr) if stderr_isatty is None else stderr_isatty
        self.prog = prog or _prog_name()

    def error(self, message):
        """Write one line to stderr, prefixed with the program name."""
        self.stderr.write(f"{self.prog}: {message}\n")
        self.stderr.flush()

    def note(self, message):
        """Write an informational line to stderr (stdout is for data)."""
        self.stderr.write(message + "\n")


def _isatty(stream):
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _prog_name():
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "rmctl"
    return name if name and name not in ("__main__.py", "-c") else "rmctl"


def main(argv=None, env=None):
    """Run one command; return its exit code (0 ok, 1 unexpected, 2 usage, 4/5 API, 6 transport, 7 not granted, 130)."""
    env = env or Environment()
    argv = _join_sort(sys.argv[1:] if argv is None else list(argv))
    from .parser import build

    parser = build(env.prog, env.stdout, env.stderr)
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version, or a usage error argparse already printed
        return e.code if isinstance(e.code, int) else ExitStatus.USAGE
    debug = getattr(args, "debug", False) or "--debug" in argv
    client = None
    try:
        client = make_client(args, env)
        return args.run(client, args, env) or ExitStatus.OK
    except KeyboardInterrupt as e:
        env.error(_interrupted(e))
        return ExitStatus.INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`rmctl list | head`): not an error worth a message.
        _silence_stdout(env)
        return ExitStatus.OK
    except Exception as e:  # the funnel: every failure becomes one line and an exit code
        code, message = _describe(e, client)
        if debug:
            import traceback

            traceback.print_exc(file=env.stderr)
        env.error(message)
        return code
    finally:
        if client is not None:
            client.close()


def _join_sort(argv):
    # `--sort -hostname` reads naturally; argparse would take -hostname for an option.
    joined = []
    for i, arg in enumerate(argv):
        if arg == "--":  # what follows is another program's (rmctl run -- COMMAND ...)
            return joined + argv[i:]
        if joined and joined[-1] == "--sort" and arg.startswith("-") and arg[1:2].isalpha():
            joined[-1] = f"--sort={arg}"
        else:
            joined.append(arg)
    return joined


def make_client(args, env):
    """Return the client for the command line's resource type, endpoint and credentials."""
    from ..clientlib import config as client_config
    from ..clientlib.client import ResourceManagerClient

    try:
        return ResourceManagerClient(args.resource, args.endpoint, args.username, args.password,
                                     token=args.token, timeout=args.timeout, environ=env.environ,
                                     config_file=client_config.config_path(env.environ, env.config_dir),
                                     max_retries=args.max_retries, retry_time=args.retry_time,
                                     retry_backoff=args.retry_backoff, on_retry=lambda e: note_retry(e, env))
    except ValueError as e:  # a bad config file or RM_TIMEOUT
        raise UsageError(str(e)) from e


def note_retry(event, env):
    """Say on stderr that a request is retried, why and after how long (a CI log shows the blip)."""
    from urllib.parse import unquote, urlsplit

    from ..clientlib.retry import describe_failure

    env.error(f"{event.method} {unquote(urlsplit(event.url).path)}: {describe_failure(event)}; "
              f"retry {event.attempt} of {event.max_retries} in {event.wait:.1f} s")


def _interrupted(interrupt):
    if not hasattr(interrupt, "cancelled"):
        return "interrupted"
    rid = interrupt.reservation_id
    if interrupt.cancelled:
        return f"interrupted: queued reservation {rid} cancelled"
    return (f"interrupted: could not cancel queued reservation {rid or '(id unknown)'} ({interrupt.error}); "
            "its wait runs out by itself")


def _describe(error, client):
    from ..clientlib.errors import APIError, ReservationNotGranted, ResourceManagerError, TransportError

    if isinstance(error, UsageError):
        return ExitStatus.USAGE, str(error)
    if isinstance(error, APIError):
        return (ExitStatus.API_5XX if error.status >= 500 else ExitStatus.API_4XX), _api_message(error, client)
    if isinstance(error, TransportError):
        return ExitStatus.UNREACHABLE, error.message
    if isinstance(error, ReservationNotGranted):
        return ExitStatus.NOT_GRANTED, error.message
    if isinstance(error, ResourceManagerError):
        return ExitStatus.UNEXPECTED, error.message
    return ExitStatus.UNEXPECTED, (f"unexpected error: {type(error).__name__}: {error} "
                                   "(run again with --debug for details)")


def _api_message(error, client):
    """Return the line saying what the API refused, with a hint naming the credentials `client` sent."""
    from urllib.parse import unquote, urlsplit

    what = ""
    if error.method and error.url:
        what = f"{error.method} {unquote(urlsplit(error.url).path)}: "
    message = error.message
    if error.status == 404 and message.startswith("The requested URL was not found"):
        message = "not found"
    if error.issues:
        from ..clientlib.errors import format_issues

        # Eve's 422 message ("Insertion failure: 1 document(s)...") says less than the issues do.
        text = f"{what}{error.status} invalid: {format_issues(error.issues)}"
    else:
        text = f"{what}{error.status} {message}"
    token = client is not None and client.token
    if error.status == 401 and token:
        text += " - check the token: --token, RM_TOKEN or the config file (revoked or expired? rmctl token list)"
    elif error.status == 401:
        text += (" - check the credentials: --username/--password, RM_USERNAME/RM_PASSWORD, --token/RM_TOKEN "
                 "or the config file")
    elif error.status == 403 and token:
        text += " - the token's scope, or its user's role, does not allow this"
    elif error.status == 403:
        text += (f" - user '{(client and client.username) or 'this user'}' lacks the role for this: "
                 "writes need an operator or admin account")
    elif error.status == 412:
        text += " - the item changed since it was read; try again (update --retries N re-reads for you)"
    return text


def _silence_stdout(env):
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, env.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


if __name__ == "__main__":
    sys.exit(main())
