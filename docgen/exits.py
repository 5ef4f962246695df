"""The exit-code reference: rmctl's ExitStatus (cli/status.py, each code's comment its meaning) and rm-check's."""

import inspect
import io
import tokenize

from resource_manager.admin import check
from resource_manager.cli import status

# rm-check's codes are module constants without comments: their words are here (a new one fails the check).
CHECK_MEANING = {
    "EXIT_CLEAN": "no invariant is broken",
    "EXIT_USAGE": "the command line or the configuration is wrong (e.g. no `MONGO_URI`)",
    "EXIT_VIOLATIONS": "some invariant is broken: each is printed, marked repairable by the sweep or not",
    "EXIT_UNAVAILABLE": "the database does not answer",
}


def comments(module, cls):
    """Return {member name: its trailing comment} of the class `cls` in `module`'s source."""
    found = {}
    lines = inspect.getsource(module)
    tokens = list(tokenize.generate_tokens(io.StringIO(lines).readline))
    inside = False
    for i, tok in enumerate(tokens):
        if tok.type == tokenize.NAME and tok.string == "class" and tokens[i + 1].string == cls:
            inside = True
        elif inside and tok.type == tokenize.DEDENT and tok.start[1] == 0:
            break
        elif inside and tok.type == tokenize.COMMENT:
            line = tokens[i - 1].line.strip()
            name = line.split("=")[0].strip()
            if name.isidentifier():
                found[name] = tok.string.lstrip("#").strip()
    return found


def check_codes():
    return {name: getattr(check, name) for name in dir(check) if name.startswith("EXIT_")}


def missing():
    """Return the exit codes without words (empty when complete)."""
    words = comments(status, "ExitStatus")
    gaps = [f"ExitStatus.{m.name}: no comment in cli/status.py" for m in status.ExitStatus if m.name not in words]
    gaps += [f"rm-check {n}: no meaning in docgen/exits.py" for n in check_codes() if n not in CHECK_MEANING]
    return gaps


def rmctl_table():
    words = comments(status, "ExitStatus")
    rows = ["| code | name | meaning |", "|---|---|---|"]
    rows += [f"| {m.value} | `{m.name}` | {words.get(m.name, '')} |" for m in status.ExitStatus]
    return "\n".join(rows)


def check_table():
    rows = ["| code | name | meaning |", "|---|---|---|"]
    rows += [f"| {value} | `{name}` | {CHECK_MEANING.get(name, '')} |"
             for name, value in sorted(check_codes().items(), key=lambda item: item[1])]
    return "\n".join(rows)
