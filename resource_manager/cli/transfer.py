"""import and export: CSV, JSON lines or a JSON array, in bulk requests."""

import csv
import io
import json
import os
from concurrent.futures import ThreadPoolExecutor

from ..clientlib.errors import APIError, PreconditionFailed, format_issues
from ..schema import canonical_ip
from . import csvcells
from .command import Command
from .output import clean, write_csv, write_json
from .status import ExitStatus, UsageError

EXTENSIONS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json"}
UPDATE_WORKERS = 8


def guess_format(path, text=None):
    """Return csv, jsonl or json from the file extension, else from the first character of `text`."""
    fmt = EXTENSIONS.get(os.path.splitext(path)[1].lower())
    if fmt or text is None:
        return fmt
    start = text.lstrip()[:1]
    return {"[": "json", "{": "jsonl"}.get(start, "csv")


def read_rows(text, fmt):
    """Yield (line, document or error message) for each row of the file's text."""
    if fmt == "csv":
        reader = csv.DictReader(io.StringIO(text, newline=""))
        for row in reader:
            doc = {}
            for key, value in row.items():
                if key is None:
                    yield reader.line_num, "more cells than columns"
                    break
                value = csvcells.read(key.strip(), value)
                if value is not csvcells.ABSENT:
                    doc[key.strip()] = value
            else:
                yield reader.line_num, _nest(doc)
    elif fmt == "jsonl":
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                yield number, _parse_object(line)
    else:
        try:
            items = json.loads(text)
        except ValueError as e:
            yield 1, f"not valid JSON: {e}"
            return
        if not isinstance(items, list):
            yield 1, "a JSON file must hold an array of objects"
            return
        for number, item in enumerate(items, 1):
            yield number, _nest(item) if isinstance(item, dict) else "not a JSON object"


def _parse_object(line):
    try:
        value = json.loads(line)
    except ValueError as e:
        return f"not valid JSON: {e}"
    return _nest(value) if isinstance(value, dict) else "not a JSON object"


def _nest(doc):
    nested = {}
    for key, value in doc.items():
        if key.startswith("_"):
            continue  # _id, _etag...: an export's metadata, not data
        if "." in key:
            top, sub = key.split(".", 1)
            nested.setdefault(top, {})
            if isinstance(nested[top], dict):
                nested[top][sub] = value
        else:
            nested[key] = value
    return nested


def _canonical(value, key):
    return canonical_ip(value) if key == "address" else value


def changes_between(current, wanted, key):
    """Return the fields of `wanted` that differ from `current` (nested dicts: only the differing keys)."""
    changes = {}
    for field, value in wanted.items():
        if field == key:
            continue
        old = current.get(field)
        if isinstance(value, dict) and isinstance(old, dict):
            sub = {k: v for k, v in value.items() if old.get(k) != v}
            if sub:
                changes[field] = sub
        elif old != value:
            changes[field] = value
    return changes


class Progress:
    """A progress bar on stderr, drawn only when stderr is a terminal."""

    def __init__(self, env, total, label):
        self.env, self.total, self.label, self.done = env, total, label, 0
        self.enabled = env.stderr_isatty and total > 0

    def advance(self, count=1):
        self.done += count
        if self.enabled:
            width = 30
            filled = int(width * self.done / self.total)
            self.env.stderr.write(f"\r{self.label} [{'#' * filled}{'.' * (width - filled)}] "
                                  f"{self.done}/{self.total}")
            self.env.stderr.flush()

    def finish(self):
        if self.enabled:
            self.env.stderr.write("\n")


def _message(error):
    if isinstance(error, APIError):
        return format_issues(error.issues) if error.issues else f"{error.status} {error.message}"
    return str(error)


def cmd_import(client, args, env):
    if args.chunk_size < 1:
        raise UsageError("--chunk-size must be at least 1")
    text = _read_input(args.file, env)
    fmt = args.file_format or guess_format(args.file, text)
    key = client.key
    failures, seen, to_create, to_update = [], {}, [], []
    unchanged = 0
    existing = {_canonical(doc.get(key), key): doc for doc in client.iter(page_size=1000)}
    for line, doc in read_rows(text, fmt):
        if isinstance(doc, str):
            failures.append((line, None, doc))
            continue
        name = _canonical(doc.get(key), key)
        if not name:
            failures.append((line, None, f"no {key}"))
        elif name in seen:
            failures.append((line, name, f"same {key} as line {seen[name]}"))
        elif name in existing:
            seen[name] = line
            changes = changes_between(existing[name], doc, key)
            if changes:
                to_update.append((line, name, doc, changes, existing[name]))
            else:
                unchanged += 1
        else:
            seen[name] = line
            to_create.append((line, name, doc))
    progress = Progress(env, len(to_create) + len(to_update), f"importing {client.resource_type}")
    created = updated = 0
    try:
        done = [0]

        def advance(count):
            progress.advance(count - done[0])
            done[0] = count

        results = client.create_many([doc for _, _, doc in to_create], args.chunk_size, on_progress=advance)
        for (line, name, _), result in zip(to_create, results, strict=True):
            if isinstance(result, Exception):
                failures.append((line, name, _message(result)))
            else:
                created += 1
        with ThreadPoolExecutor(UPDATE_WORKERS) as pool:
            for (line, name, _, _, _), error in zip(to_update, pool.map(lambda u: _update(client, u), to_update),
                                                    strict=True):
                progress.advance()
                if error:
                    failures.append((line, name, _message(error)))
                else:
                    updated += 1
    finally:
        progress.finish()
    for line, name, message in sorted(failures, key=lambda f: f[0]):
        env.error(f"line {line}" + (f" ({name})" if name else "") + f": {message}")
    env.stdout.write(f"created {created}, updated {updated}, unchanged {unchanged}, failed {len(failures)}\n")
    return ExitStatus.API_4XX if failures else ExitStatus.OK


def _update(client, update):
    _, name, doc, changes, current = update
    try:
        try:
            client.call("PATCH", client.item_path(current["_id"]), json=changes,
                        headers={"If-Match": current["_etag"]})
        except PreconditionFailed:
            # Changed since we listed it: recompute the changes from the current version.
            client.modify(name, lambda current: changes_between(current, doc, client.key) or {client.key: name},
                          retries=2)
    except APIError as e:
        return e
    return None


def _read_input(path, env):
    if path == "-":
        return env.stdin.read()
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            return fh.read()
    except OSError as e:
        raise UsageError(f"cannot read {path}: {e.strerror}") from e


def cmd_export(client, args, env):
    where = None
    if args.where:
        from .commands import parse_json_object

        where = parse_json_object(args.where, "--where")
    fmt = args.file_format or guess_format(args.file) or "json"
    docs = [clean(doc, keep_meta=False) for doc in client.iter(where)]
    if args.file == "-":
        _write(docs, env.stdout, fmt, client.schema_fields)
    else:
        try:
            with open(args.file, "w", encoding="utf-8", newline="") as fh:
                _write(docs, fh, fmt, client.schema_fields)
        except OSError as e:
            raise UsageError(f"cannot write {args.file}: {e.strerror}") from e
        env.note(f"exported {len(docs)} {client.resource_type} to {args.file}")


def _write(docs, stream, fmt, fields):
    if fmt == "csv":
        write_csv(docs, stream, fields)
    elif fmt == "jsonl":
        for doc in docs:
            stream.write(json.dumps(doc, default=str) + "\n")
    else:
        write_json(docs, stream)


def _import_arguments(p):
    p.add_argument("file", help="CSV, JSON lines or a JSON array; - for standard input")
    p.add_argument("--format", dest="file_format", choices=("csv", "jsonl", "json"),
                   help="file format (default: from the extension, else guessed from the content)")
    p.add_argument("--chunk-size", type=int, default=1000, help="documents per bulk request (default 1000)")


def _export_arguments(p):
    p.add_argument("file", nargs="?", default="-", help="output file (default: standard output)")
    p.add_argument("--format", dest="file_format", choices=("csv", "jsonl", "json"),
                   help="file format (default: from the extension, else json)")
    p.add_argument("--where", help="Eve/MongoDB filter as JSON")


COMMANDS = (
    Command("import", "create or update items from a CSV or JSON-lines file",
            """Rows are matched by name (hostname/address): new ones are created in bulk,
existing ones updated when they differ. Empty CSV cells are left out; tags.<key> columns fill tags.
Prints a summary; each failed row is reported on stderr; exit code 4 when any row failed.

examples:
  {prog} import machines.csv
  {prog} import addresses.jsonl -r public-addresses
  {prog} export backup.csv && {prog} import backup.csv""", _import_arguments, cmd_import),
    Command("export", "write every item (or those matching --where) to CSV, JSON or JSON lines", """examples:
  {prog} export machines.csv
  {prog} export --format jsonl --where '{{"state": "idle"}}' > idle.jsonl""", _export_arguments, cmd_export),
)
