"""What the package says of itself holds: its license is there, the files it names exist."""

import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_the_license_file_matches_the_declared_license():
    with open(os.path.join(ROOT, "pyproject.toml"), encoding="utf-8") as fh:
        assert re.search(r'^license = \{text = "BSD-2-Clause"\}$', fh.read(), re.M)
    with open(os.path.join(ROOT, "LICENSE"), encoding="utf-8") as fh:
        text = fh.read()
    assert text.startswith("BSD 2-Clause License\n\nCopyright (c) ")
    assert "the ResourceManager authors" in text.splitlines()[2]
    assert "Redistributions in binary form must reproduce" in text and "3." not in text  # two clauses


def test_the_files_pyproject_names_exist():
    with open(os.path.join(ROOT, "pyproject.toml"), encoding="utf-8") as fh:
        named = set(re.findall(r"\b[\w./-]+\.(?:md|txt|cfg|toml|ini)\b", fh.read()))
    missing = [name for name in sorted(named) if not os.path.exists(os.path.join(ROOT, name))]
    assert named and not missing, missing
