"""`python -m docgen [--check]`: write the generated parts of the reference pages (or check they are current)."""

import argparse
import os
import sys

from . import cli, exits, markers, metrics, settings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# page (under docs/) -> {marker name: what writes it}
GENERATED = {
    "reference/configuration.md": {"server-settings": settings.server_table, "client-settings": settings.client_table,
                                   "other-variables": settings.other_table},
    "operations/metrics.md": {"metrics": metrics.table},
    "reference/cli.md": {"commands": cli.page},
    "reference/exit-codes.md": {"rmctl-exit-codes": exits.rmctl_table, "rm-check-exit-codes": exits.check_table},
}


def render(root=ROOT):
    """Return {path: (current text, generated text)} of every page with generated parts."""
    pages = {}
    for page, parts in GENERATED.items():
        path = os.path.join(root, "docs", page)
        with open(path, encoding="utf-8") as fh:
            current = fh.read()
        text = current
        for name, write in parts.items():
            text = markers.replace(text, name, write())
        pages[path] = (current, text)
    return pages


def missing():
    """Return every setting, variable, metric, command and exit code that has no words (empty when complete)."""
    return settings.missing() + metrics.missing() + cli.missing() + exits.missing()


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m docgen", description=__doc__)
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a page is stale")
    args = parser.parse_args(argv)
    gaps = missing()
    for gap in gaps:
        print(f"docgen: undocumented: {gap}", file=sys.stderr)
    stale = []
    for path, (current, text) in render().items():
        if current != text:
            stale.append(os.path.relpath(path, ROOT))
            if not args.check:
                with open(path, "w", encoding="utf-8") as fh:
                    fh.write(text)
    if args.check and stale:
        print(f"docgen: stale: {', '.join(stale)}: run `make docs` (or python -m docgen) and commit them",
              file=sys.stderr)
    elif stale:
        print(f"docgen: wrote {', '.join(stale)}")
    return 1 if gaps or (args.check and stale) else 0


if __name__ == "__main__":
    sys.exit(main())
