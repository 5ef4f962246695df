"""Output of the CLI: tables for a terminal, JSON or CSV for programs."""

import csv
import json

from ..clientlib.original import cell
from ..schema import META_FIELDS
from . import csvcells


def clean(doc, keep_meta=True):
    """Return the document without Eve's links (and without every meta field unless keep_meta)."""
    drop = ("_links", "_status") if keep_meta else META_FIELDS
    return {k: v for k, v in doc.items() if k not in drop}


def flatten(doc):
    """Return a document as CSV cells (csvcells.py): nested dicts as dotted keys (tags.memory)."""
    flat = {}
    for key, value in doc.items():
        if isinstance(value, dict):
            for sub, subvalue in value.items():
                flat[f"{key}.{sub}"] = csvcells.write(f"{key}.{sub}", subvalue)
        else:
            flat[key] = csvcells.write(key, value)
    return flat


def csv_columns(rows, preferred):
    """Return the columns of flattened rows: the preferred fields (and their sub-keys) first, in order."""
    seen = []
    for row in rows:
        for key in row:
            if key not in seen:
                seen.append(key)

    def rank(key):
        top = key.split(".", 1)[0]
        return (preferred.index(top) if top in preferred else len(preferred), key if "." in key else "")

    return sorted(seen, key=rank)


def write_csv(docs, stream, preferred):
    """Write documents as CSV with a header row."""
    rows = [flatten(d) for d in docs]
    columns = csv_columns(rows, preferred)
    plain = csv.writer(stream, lineterminator="\n")
    # The csv module quotes a cell with a CR only when CR ends lines; such a row gets every cell quoted.
    quoted = csv.writer(stream, lineterminator="\n", quoting=csv.QUOTE_ALL)
    for cells in [columns] + [[row.get(column, "") for column in columns] for row in rows]:
        (quoted if any("\r" in cell for cell in cells) else plain).writerow(cells)


def write_json(data, stream):
    """Write data as indented JSON."""
    stream.write(json.dumps(data, indent=2, default=str))
    stream.write("\n")


def write_table(docs, stream, columns):
    """Write documents as a table of the given columns."""
    from prettytable import PrettyTable  # only tables need it: keep the start fast

    table = PrettyTable(columns)
    table.align = "l"
    for doc in docs:
        table.add_row([cell(field_value(doc, c)) for c in columns])
    stream.write(table.get_string() + "\n")


def write_item(doc, stream, fmt):
    """Write one document: a field/value table, JSON, or CSV."""
    doc = clean(doc)
    if fmt == "table":
        from prettytable import PrettyTable

        table = PrettyTable(["field", "value"])
        table.align = "l"
        for key, value in doc.items():
            table.add_row([key, cell(value)])
        stream.write(table.get_string() + "\n")
    elif fmt == "csv":
        write_csv([doc], stream, list(doc))
    else:
        write_json(doc, stream)


def write_items(docs, stream, fmt, columns):
    """Write a list of documents in a format; `columns` are the table/CSV columns."""
    docs = [clean(d) for d in docs]
    if fmt == "table":
        write_table(docs, stream, columns)
    elif fmt == "csv":
        write_csv(docs, stream, columns)
    else:
        write_json(docs, stream)


def field_value(doc, column):
    """Return the value of a (dotted: tags.memory) column of a document, or None."""
    value = doc
    for part in column.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value
