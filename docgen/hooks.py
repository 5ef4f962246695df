"""mkdocs hooks (mkdocs.yml `hooks:`): list every page under docs/evidence/ in the nav's Evidence section.

Each branch writes its figures into docs/evidence/<branch>.md; the nav names the fixed pages, and the
others join the section by themselves, sorted by name, so that none is left out of the site.
"""

import os

SECTION = "Evidence"


def on_config(config):
    folder = os.path.join(config["docs_dir"], "evidence")
    for entry in config["nav"] or []:
        if isinstance(entry, dict) and SECTION in entry:
            pages = entry[SECTION]
            listed = {next(iter(p.values())) if isinstance(p, dict) else p for p in pages}
            for name in sorted(os.listdir(folder)):
                path = f"evidence/{name}"
                if name.endswith(".md") and path not in listed:
                    pages.append(path)
    return config
