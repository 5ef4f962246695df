"""The command-line reference: rmctl and the admin tools, from their own argparse parsers.

Each program's parser is captured from its `main` (argparse's parse_args is stopped before it parses),
so the pages follow whatever builds the parser. Rendered from the parser's actions, not from its
formatted help, so that the page is the same on every Python version. rmctl's commands are declared
once (cli/command.py, listed by cli/registry.py): its parser is built from them, and `missing` checks
the declarations themselves (a summary and examples each) and that the parser lists every one.
"""

import argparse
import os
from unittest import mock

PROGRAMS = (
    ("rmctl", "resource_manager.cli.main", "main",
     "The command line of the service: items, reservations, addresses, tokens. `./client.py` inside "
     "`resource_manager/` is the same program."),
    ("rm-users", "resource_manager.admin.users", "main", "Manage the accounts of the users file."),
    ("rm-sweep", "resource_manager.admin.sweep", "main", "Expire leases and repair half-done work (for cron)."),
    ("rm-check", "resource_manager.admin.check", "main", "Report every broken invariant of the database."),
    ("server.py", "resource_manager.server", "main",
     "`make run` and `./server.py`: serve the API for development, on the embedded database unless `MONGO_URI` "
     "is set (`rm-server` is the same)."),
)
# Variables the parsers read their defaults from: the page shows the defaults of a clean environment.
ENVIRONMENT = ("HOST", "PORT", "RM_DATA_DIR", "RM_USERS_FILE", "MONGO_URI", "RM_MONGO_URI")


class _Captured(Exception):
    def __init__(self, parser):
        super().__init__(parser.prog)
        self.parser = parser


def capture(module, function):
    """Return the top-level parser that `module.function(["--help"])` builds, without running anything else."""
    import importlib

    def stop(parser, *_args, **_kwargs):
        raise _Captured(parser)

    main = getattr(importlib.import_module(module), function)
    clean = {k: v for k, v in os.environ.items() if k not in ENVIRONMENT}
    with mock.patch.dict(os.environ, clean, clear=True), mock.patch.object(argparse.ArgumentParser, "parse_args", stop):
        try:
            if module.endswith(".cli.main"):
                from resource_manager.cli.main import Environment

                main(["--help"], Environment(prog="rmctl"))
            else:
                main(["--help"])
        except _Captured as found:
            return found.parser
    raise RuntimeError(f"{module}.{function} built no parser")


def subcommands(parser):
    """Return {name: (summary, parser)} of a parser's subcommands, in their order."""
    found = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help for choice in action._choices_actions}
            for name, sub in action.choices.items():
                found[name] = (helps.get(name), sub)
    return found


def _arguments(parser, skip=()):
    rows = []
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)) or action.dest in skip:
            continue
        if action.option_strings:
            name = ", ".join(action.option_strings)
            if action.nargs != 0:
                name += " " + (action.metavar or action.dest.upper())
        else:
            name = action.metavar or action.dest
        details = []
        if action.choices is not None and not isinstance(action.choices, dict):
            details.append("one of " + ", ".join(f"`{c}`" for c in action.choices))
        if action.required and action.option_strings:
            details.append("required")
        if action.default not in (None, False, argparse.SUPPRESS) and action.nargs != 0 and not isinstance(
                action, argparse._VersionAction) and "default" not in (action.help or ""):
            details.append(f"default `{action.default}`")
        if action.nargs in ("?", "*"):
            details.append("optional" if action.nargs == "?" else "any number")
        text = (action.help or "").replace("%(prog)s", parser.prog).replace("|", "\\|")
        extra = f" ({'; '.join(details)})" if details else ""
        rows.append(f"| `{name}` | {text}{extra} |")
    if not rows:
        return ""
    return "| argument | meaning |\n|---|---|\n" + "\n".join(rows)


def _examples(parser):
    text = (parser.epilog or "").strip()
    return f"```text\n{text}\n```" if text else ""


def _describe(parser, summary=None):
    text = (parser.description or "").strip() or (summary or "").strip()
    return text[:1].upper() + text[1:] + ("" if not text or text.endswith(".") else ".")


def _section(title, parser, level, skip, summary=None):
    parts = [f"{'#' * level} {title}", _describe(parser, summary), _arguments(parser, skip), _examples(parser)]
    return "\n\n".join(p for p in parts if p)


def _walk(title, parser, level, skip, summary=None):
    out = [_section(title, parser, level, skip, summary)]
    for name, (help_, sub) in subcommands(parser).items():
        inherited = skip | {a.dest for a in parser._actions if a.option_strings and a.dest != "help"}
        out += _walk(f"`{title.strip('`')} {name}`", sub, min(level + 1, 4), inherited, help_)
    return out


def registry_gaps(parser):
    """Return rmctl's declared commands (cli/registry.py) lacking words, or missing from its parser."""
    from resource_manager.cli.registry import COMMANDS

    gaps = []

    def walk(commands, parser, path):
        listed = subcommands(parser)
        for command in commands:
            name = f"{path} {command.name}"
            if not command.summary.strip():
                gaps.append(f"{name}: no summary in its Command")
            if not command.examples.strip():
                gaps.append(f"{name}: no examples in its Command")
            if command.name not in listed:
                gaps.append(f"{name}: declared, but not in the parser")
            else:
                walk(command.actions, listed[command.name][1], name)

    walk(COMMANDS.values(), parser, "rmctl")
    return gaps


def missing():
    """Return the commands without a summary or a description (empty when complete)."""
    gaps = registry_gaps(capture(*PROGRAMS[0][1:3]))
    for prog, module, function, _about in PROGRAMS:
        stack = [(prog, capture(module, function))]
        while stack:
            path, parser = stack.pop()
            for name, (summary, sub) in subcommands(parser).items():
                if not (summary or "").strip():
                    gaps.append(f"{path} {name}: no help summary")
                stack.append((f"{path} {name}", sub))
    return gaps


def page():
    """Return the Markdown of every program's commands."""
    out = []
    for prog, module, function, about in PROGRAMS:
        parser = capture(module, function)
        out.append(f"## `{prog}`\n\n{about}")
        summary = ["| command | what it does |", "|---|---|"]
        summary += [f"| [`{prog} {name}`](#{_anchor(prog, name)}) | {help_ or ''} |"
                    for name, (help_, _sub) in subcommands(parser).items()]
        if len(summary) > 2:
            out.append("\n".join(summary))
        sections = _walk(f"`{prog}`", parser, 2, frozenset())
        out.append(sections[0].split("\n", 1)[1].strip())  # the program's own options, under its ## heading
        out += sections[1:]
    return "\n\n".join(p for p in out if p)


def _anchor(prog, name):
    """Return the anchor Python-Markdown's toc gives the heading `{prog} {name}` (in backticks)."""
    import re

    text = f"{prog} {name}".lower()
    text = re.sub(r"[^\w\s-]", "", text)
    return re.sub(r"[-\s]+", "-", text).strip("-")
