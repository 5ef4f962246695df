"""rmctl's commands are declared once (cli/command.py, cli/registry.py): parser, help and dispatch follow."""

from resource_manager.cli import registry
from resource_manager.cli.command import Command, output_option

from .cli_helpers import run_cli


def _hello_arguments(parser):
    parser.add_argument("name")
    output_option(parser)


def _hello(client, args, env):
    env.stdout.write(f"hello {args.name}, from {client.username} ({args.format or 'default'})\n")
    return 3


def test_a_command_declared_once_is_listed_helped_parsed_and_run(monkeypatch):
    monkeypatch.setitem(registry.COMMANDS, "hello", Command(
        "hello", "say hello", "examples:\n  {prog} hello you", _hello_arguments, _hello))
    assert "say hello" in run_cli("--help").out
    helped = run_cli("hello", "--help")
    assert helped.code == 0 and "Say hello." in helped.out and "rmctl hello you" in helped.out
    done = run_cli("hello", "you", "-u", "ci-bot", "--format", "json", "-e", "http://127.0.0.1:9")
    assert (done.code, done.out, done.err) == (3, "hello you, from ci-bot (json)\n", "")
    assert run_cli("hello").code == 2  # its own arguments, checked by argparse


def test_every_command_has_a_summary_examples_and_a_handler():
    for command in registry.COMMANDS.values():
        for one in command.actions or (command,):
            assert one.summary and "examples:" in one.examples and callable(one.run), one.name
