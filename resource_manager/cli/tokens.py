"""rmctl token create | list | revoke: API tokens. The secret is printed once, by create, to stdout only."""

import re

from .alloc import parse_duration
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


ACTIONS = {"create": cmd_create, "list": cmd_list, "revoke": cmd_revoke}


def cmd_token(client, args, env):
    return ACTIONS[args.token_command](client, args, env)


HANDLERS = {"token": cmd_token}
