"""The cells of our CSV files: what rmctl writes it reads back exactly, and what a person writes reads as before.

One convention for every CSV rmctl writes (export, list --format csv) and reads (import):

Reading a cell (column `key`):
- empty: the field is left out (as before);
- starting with ``'``: the rest of the cell, as text, exactly (``'`` alone is the empty string);
- ``null``: null;
- in a ``tags.<key>`` column, a number, true, false or JSON (``[...]``, ``{...}``): that value (as before);
- anything else: the text as it is (as before).

Writing a value: JSON for anything but text (numbers, true/false, null, lists, objects); text as it
is when it reads back as itself, else with a ``'`` in front. So ``'`` marks the empty string, text
that looks like a number, a boolean, null or JSON where it would be read as one ("42", "1.10", "1e3",
"true", "null" in a tag column), text that starts with ``'``, and text a spreadsheet would run as a
formula: a cell starting with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return (OWASP's CSV
injection). A spreadsheet shows such a cell as text; rmctl import takes the ``'`` off again.
"""

import json
import re

ABSENT = object()  # what an empty cell reads as: no such field
TEXT = "'"
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_JSONISH = re.compile(r"-?\d+(\.\d+)?([eE][-+]?\d+)?|true|false|null|\[.*\]|\{.*\}", re.S)


def is_tag_column(key):
    """Return whether a column holds a tag (tags.<key>): its cells may hold numbers, booleans or JSON."""
    return "." in key


def read(key, cell):
    """Return the value of a cell of column `key`, or ABSENT for an empty one."""
    if cell is None or cell == "":
        return ABSENT
    if cell.startswith(TEXT):
        return cell[1:]
    if cell == "null":
        return None
    if is_tag_column(key) and _JSONISH.fullmatch(cell.strip()):
        try:
            return json.loads(cell)
        except ValueError:
            pass
    return cell


def write(key, value):
    """Return the cell for `value` in column `key`: read(key, write(key, value)) == value."""
    if not isinstance(value, str):
        # Never a formula: JSON text starts with a digit, "-" and a digit (a number), [, {, t, f or n.
        return json.dumps(value, ensure_ascii=False)
    if value and not value.startswith(FORMULA_START) and read(key, value) == value:
        return value
    return TEXT + value
