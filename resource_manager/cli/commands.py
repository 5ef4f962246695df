"""The item commands of the CLI: list, get, create, update, delete; the helpers every command uses."""

import json
import re

from ..schema import META_FIELDS, sort_key
from .command import Command, output_option
from .output import field_value, write_item, write_items
from .status import UsageError

ASSIGNMENTS_HELP = ("field=value pairs; field:=JSON for numbers, booleans, null, lists; "
                    "tags.memory:=16 sets one tag")


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
    if args.sort and SIMPLE_SORT.fullmatch(args.sort):
        # The server sorts text code point by code point (n10 before n2): every match is read and sorted
        # here in natural order, then cut to --limit.
        items = natural_order(list(client.iter(where or None, args.sort, fields)), args.sort)[:args.limit]
    else:
        items = client.iter(where or None, args.sort, fields, limit=args.limit)
    fmt = output_format(args, env)
    columns = fields or client.schema_fields
    if fmt == "csv":
        wanted = {f.split(".", 1)[0] for f in fields or ()}
        items = [{k: v for k, v in item.items() if k not in META_FIELDS and (not wanted or k in wanted)}
                 for item in items]
    write_items(items, env.stdout, fmt, columns)


SIMPLE_SORT = re.compile(r"\s*-?[\w.]+\s*(,\s*-?[\w.]+\s*)*")


def natural_order(items, sort):
    """Return `items` sorted as `--sort` says ("state,-hostname"), text in natural order: n2 before n10."""
    for field in reversed([f.strip() for f in sort.split(",")]):
        name = field.lstrip("-")
        items.sort(key=lambda item: sort_key(field_value(item, name)), reverse=field.startswith("-"))
    return items


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


def _list_arguments(p):
    p.add_argument("--where", help="Eve/MongoDB filter as JSON")
    p.add_argument("--sort", help="field to sort by; -field for descending; a,b for several")
    p.add_argument("--fields", help="comma-separated fields to show")
    p.add_argument("--state", help="machines in this state (shortcut for --where)")
    p.add_argument("--owner", help="items of this owner ('' for none)")
    p.add_argument("--limit", type=int, help="at most this many items")
    output_option(p)


def _get_arguments(p):
    p.add_argument("name", help="hostname, address or _id")
    output_option(p)


def _json_and_reason(p, name):
    p.add_argument("--json", dest="json_doc", metavar="JSON",
                   help="the document as a JSON object" + (" naming the item" if name != "create" else ""))
    p.add_argument("--reason", help="why: kept in the item's history")


def _create_arguments(p):
    _json_and_reason(p, "create")
    p.add_argument("assignments", nargs="*", metavar="FIELD=VALUE", help=ASSIGNMENTS_HELP)
    output_option(p)


def _update_arguments(p):
    _json_and_reason(p, "update")
    p.add_argument("words", nargs="*", metavar="NAME FIELD=VALUE", help="the item, then " + ASSIGNMENTS_HELP)
    p.add_argument("--retries", type=int, default=0,
                   help="re-read and retry this many times if the item changes meanwhile")
    output_option(p)


def _delete_arguments(p):
    _json_and_reason(p, "delete")
    p.add_argument("name", nargs="?", help="hostname, address or _id")


COMMANDS = (
    Command("list", "list items (table on a terminal, JSON when piped)", """examples:
  {prog} list
  {prog} list --state idle --owner ''
  {prog} list --where '{{"tags.memory": {{"$gte": 17179869184}}}}' --sort -hostname
  {prog} list --fields hostname,state --format csv
  {prog} list -r private-addresses -e http://127.0.0.1:5000""", _list_arguments, cmd_list),
    Command("get", "show one item by name (hostname or address)", """examples:
  {prog} get a-15-r
  {prog} get 10.0.0.7 -r private-addresses --format json""", _get_arguments, cmd_get),
    Command("create", "create an item from --json or field=value pairs", """examples:
  {prog} create --json '{{"hostname":"my-machine", "owner": "tony", "state": "idle"}}'
  {prog} create hostname=my-machine state=idle tags.cpucores:=8
  {prog} create -r public-addresses address=203.0.113.7""", _create_arguments, cmd_create),
    Command("update", "change fields of an item (PATCH with If-Match)", """examples:
  {prog} update --json '{{"hostname":"my-machine", "owner": ""}}'
  {prog} update my-machine owner=ci state=in_use
  {prog} update my-machine job_id:=null --retries 3""", _update_arguments, cmd_update),
    Command("delete", "delete an item", """examples:
  {prog} delete my-machine
  {prog} delete --json '{{"hostname":"my-machine"}}'""", _delete_arguments, cmd_delete),
)
