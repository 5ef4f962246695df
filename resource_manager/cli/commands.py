"""The item commands of the CLI: list, get, create, update, delete; dispatch to the others."""

import json

from ..schema import META_FIELDS
from .output import write_item, write_items
from .status import UsageError


def run(args, env):
    """Run the parsed command; return its exit code."""
    client = make_client(args, env)
    try:
        handler = HANDLERS.get(args.command)
        if handler is None:
            from . import alloc as cli_alloc
            from . import run as cli_run
            from . import tokens as cli_tokens
            from . import transfer as cli_import

            handler = {**cli_import.HANDLERS, **cli_alloc.HANDLERS, **cli_tokens.HANDLERS,
                       **cli_run.HANDLERS}[args.command]
        return handler(client, args, env)
    finally:
        client.close()


def make_client(args, env):
    """Return the client for the command line's resource type, endpoint and credentials."""
    from ..clientlib import config as client_config
    from ..clientlib.client import ResourceManagerClient

    try:
        client = ResourceManagerClient(args.resource, args.endpoint, args.username, args.password,
                                       token=args.token, timeout=args.timeout, environ=env.environ,
                                       config_file=client_config.config_path(env.environ, env.config_dir),
                                       max_retries=args.max_retries, retry_time=args.retry_time,
                                       retry_backoff=args.retry_backoff, on_retry=lambda e: note_retry(e, env))
    except ValueError as e:  # a bad config file or RM_TIMEOUT
        raise UsageError(str(e)) from e
    env.username = client.username
    env.token = client.auth if client.token else None  # its repr names the id, never the secret
    return client


def note_retry(event, env):
    """Say on stderr that a request is retried, why and after how long (a CI log shows the blip)."""
    from urllib.parse import unquote, urlsplit

    from ..clientlib.retry import describe_failure

    env.error(f"{event.method} {unquote(urlsplit(event.url).path)}: {describe_failure(event)}; "
              f"retry {event.attempt} of {event.max_retries} in {event.wait:.1f} s")


def output_format(args, env):
    """Return the format asked for, else table on a terminal and JSON otherwise."""
    return getattr(args, "format", None) or ("table" if env.stdout_isatty else "json")


def parse_json_object(text, what="--json"):
    """Return the JSON object given on the command line. Raises UsageError."""
    try:
        value = json.loads(text)
    except ValueError as e:
        raise UsageError(f"{what} is not valid JSON: {e}") from e
    if not isinstance(value, dict):
        raise UsageError(f"{what} must be a JSON object")
    return value


def parse_assignments(pairs):
    """Return a document from field=value / field:=json / tags.key=value words. Raises UsageError."""
    doc = {}
    for pair in pairs:
        if "=" not in pair:
            raise UsageError(f"expected field=value, got {pair!r}")
        field, raw = pair.split("=", 1)
        if field.endswith(":"):
            field = field[:-1]
            try:
                value = json.loads(raw)
            except ValueError as e:
                raise UsageError(f"{field}:= needs a JSON value, got {raw!r}") from e
        else:
            value = raw
        if not field:
            raise UsageError(f"missing field name in {pair!r}")
        target = doc
        *parents, last = field.split(".")
        for part in parents:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise UsageError(f"{field}: {part} is set to a value and used as an object")
        target[last] = value
    return doc


def cmd_list(client, args, env):
    where = parse_json_object(args.where, "--where") if args.where else {}
    if args.state is not None:
        if client.resource_type != "machines":
            raise UsageError("--state applies to machines only")
        where["state"] = args.state
    if args.owner:
        where["owner"] = args.owner
    elif args.owner is not None:  # '' asks for the unowned: no owner, null or empty
        unowned = [{"owner": {"$exists": False}}, {"owner": None}, {"owner": ""}]
        where = {"$and": [where, {"$or": unowned}]} if "$or" in where else {**where, "$or": unowned}
    fields = [f.strip() for f in args.fields.split(",") if f.strip()] if args.fields else None
    items = client.iter(where or None, args.sort, fields, limit=args.limit)
    fmt = output_format(args, env)
    columns = fields or client.schema_fields
    if fmt == "csv":
        wanted = {f.split(".", 1)[0] for f in fields or ()}
        items = [{k: v for k, v in item.items() if k not in META_FIELDS and (not wanted or k in wanted)}
                 for item in items]
    write_items(items, env.stdout, fmt, columns)


def cmd_get(client, args, env):
    write_item(client.get(args.name), env.stdout, output_format(args, env))


def cmd_create(client, args, env):
    doc = parse_json_object(args.json_doc) if args.json_doc else {}
    doc.update(parse_assignments(args.assignments))
    if not doc:
        raise UsageError("create needs --json '{...}' or field=value pairs")
    write_item(client.create(doc, reason=args.reason), env.stdout, output_format(args, env))


def cmd_update(client, args, env):
    words = list(args.words)
    changes = parse_json_object(args.json_doc) if args.json_doc else {}
    name = words.pop(0) if words and "=" not in words[0] else changes.get(client.key)
    if args.json_doc and changes.get(client.key) == name:
        changes.pop(client.key)
    changes.update(parse_assignments(words))
    if not name:
        raise UsageError(f"update needs the item: NAME, or --json with its '{client.key}'")
    if not changes:
        raise UsageError("update needs something to change: field=value pairs or --json")
    doc = client.update(name, changes, retries=args.retries, reason=args.reason)
    write_item(doc, env.stdout, output_format(args, env))


def cmd_delete(client, args, env):
    name = args.name
    if args.json_doc:
        name = name or parse_json_object(args.json_doc).get(client.key)
    if not name:
        raise UsageError(f"delete needs the item: NAME, or --json with its '{client.key}'")
    client.delete(name, reason=args.reason)
    env.note(f"deleted {client.resource_type}/{name}")


HANDLERS = {"list": cmd_list, "get": cmd_get, "create": cmd_create, "update": cmd_update, "delete": cmd_delete}
