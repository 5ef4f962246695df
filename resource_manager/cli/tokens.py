"""rmctl token create | list | revoke: API tokens. The secret is printed once, by create, to stdout only."""

import re

from .alloc import parse_duration
from .command import Command, output_option
from .commands import output_format
from .output import write_item, write_items
from .status import UsageError

COLUMNS = ["_id", "user", "scope", "description", "created", "last_used", "expires", "expired"]


def expiry(text):
    """Return the body fields of --expires: {"expires": date} for a date, else {"expires_in": seconds}."""
    if text is None:
        return {}
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}([T ].*)?", text.strip()):
        return {"expires": text.strip()}
    seconds = parse_duration(text, "--expires")
    if not seconds:
        raise UsageError("--expires must be longer than 0 seconds")
    return {"expires_in": seconds}


def cmd_create(client, args, env):
    made = client.create_token(args.scope, description=args.description, user=args.user, **expiry(args.expires))
    fmt = output_format(args, env)
    if fmt == "plain":
        env.stdout.write(made["token"] + "\n")
    else:
        write_item(made, env.stdout, fmt)
    env.note(f"token {made['_id']} (scope {made['scope']}, user {made['user']}, expires {made['expires']}): "
             "shown this once; keep it in a secret store")


def cmd_list(client, args, env):
    write_items(client.tokens(args.user), env.stdout, output_format(args, env), COLUMNS)


def cmd_revoke(client, args, env):
    from ..clientlib.tokens import token_id

    client.revoke_token(args.token_id)
    ident = token_id(args.token_id) or args.token_id
    # Named by its id only: what was given may have been the whole token.
    env.note(f"revoked token {ident}" if re.fullmatch(r"[0-9a-f]{16}", ident) else "revoked the token")


def _create_arguments(p):
    p.add_argument("--scope", required=True, choices=("read", "reserve", "write", "admin"))
    p.add_argument("--expires", help="lifetime (90d, 12h, seconds) or a date (2027-01-31); default: 90 days")
    p.add_argument("--description", help="what the token is for, e.g. the CI job")
    p.add_argument("--user", help="the user the token is for (admins only; default: you)")
    output_option(p, extra=("plain",))


def _list_arguments(p):
    p.add_argument("--user", help="only this user's tokens (admins; others see only their own)")
    output_option(p)


def _revoke_arguments(p):
    # Not dest "token": that is the global --token option (the credentials), which it would overwrite.
    p.add_argument("token_id", metavar="ID", help="the token's id (or the token itself)")


COMMANDS = (
    Command("token", "create, list and revoke API tokens", """examples:
  {prog} token create --scope reserve --expires 90d --description jenkins
  RM_TOKEN=$({prog} token create --scope reserve --expires 90d --format plain)
  {prog} token list
  {prog} token list --user ci-bot        (an admin sees everyone's, or one user's)
  {prog} token revoke 0123456789abcdef""", actions=(
        Command("create", "create a token; it is printed once, never again", """\
Scopes: read; reserve (reserve, extend and
release machines, allocate and release addresses, nothing else); write (what an operator does); admin.
A token never does more than its user's role allows at the time it is used. Only a signed-in user (or a
token of scope admin) creates tokens; an admin also for another user (--user).

examples:
  {prog} token create --scope reserve --expires 90d --description jenkins
  {prog} token create --scope read --expires 2027-01-31 --format plain
  {prog} -u admin token create --scope reserve --user ci-bot --description nightly""", _create_arguments, cmd_create),
        Command("list", "list your tokens (an admin: everyone's): scope, description, created, last used, expiry",
                """Never a secret: a token is shown once, when it is created.

examples:
  {prog} token list
  {prog} token list --user ci-bot --format json""", _list_arguments, cmd_list),
        Command("revoke", "revoke a token: the next request with it is refused", """examples:
  {prog} token revoke 0123456789abcdef
  {prog} token revoke "$RM_TOKEN"        (a token revokes itself)""", _revoke_arguments, cmd_revoke),
    )),
)
