"""The generated reference pages (configuration, metrics, commands, exit codes) match the code, and cover it.

`python -m docgen` writes them (make docs); a page is stale when the code changed since, and a setting,
variable, metric, command or exit code without words is a gap. Both fail here, naming what to do.
"""

import os

import docgen.__main__ as docgen
from docgen import cli, markers, metrics, settings

from .cli_helpers import ROOT


def test_every_generated_page_is_current():
    stale = [os.path.relpath(path, ROOT) for path, (current, text) in docgen.render().items() if current != text]
    assert not stale, f"stale: {stale}: run `make docs` (python -m docgen) and commit the pages"


def test_every_setting_metric_command_and_exit_code_has_words():
    assert docgen.missing() == []


def test_the_pages_name_every_setting_metric_and_command():
    pages = {path: current for path, (current, _text) in docgen.render().items()}
    configuration = pages[os.path.join(ROOT, "docs", "reference", "configuration.md")]
    from resource_manager.api import config

    for key in config.SETTINGS:
        assert f"`RM_{key}`" in configuration
    for variable in config.CLIENT_VARIABLES | config.GUNICORN_VARIABLES | config.OTHER_VARIABLES:
        assert f"`{variable}`" in configuration
    metrics_page = pages[os.path.join(ROOT, "docs", "operations", "metrics.md")]
    assert all(f"`{name}`" in metrics_page for name, *_rest in metrics.families())
    commands = pages[os.path.join(ROOT, "docs", "reference", "cli.md")]
    rmctl = cli.capture("resource_manager.cli.main", "main")
    for name in cli.subcommands(rmctl):
        assert f"### `rmctl {name}`" in commands


def test_an_undocumented_setting_is_caught(monkeypatch):
    from resource_manager.api import config

    monkeypatch.setitem(config.SETTINGS, "NEW_KNOB", int)
    assert settings.missing() == [
        "setting NEW_KNOB: no meaning in docgen/settings.py MEANING",
        "setting NEW_KNOB: no default found in the code nor in docgen/settings.py DEFAULT_SOURCES"]
    assert "`RM_NEW_KNOB`" in settings.server_table()


def test_markers_replace_only_between_themselves():
    text = "before\n" + markers.start("x") + "\nold\n" + markers.end("x") + "\nafter\n"
    replaced = markers.replace(text, "x", "new")
    assert replaced.startswith("before\n") and replaced.endswith("after\n")
    assert "new" in replaced and "old" not in replaced
    assert markers.replace(replaced, "x", "new") == replaced  # idempotent
