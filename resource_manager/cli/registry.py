"""Every rmctl command, in the order `rmctl --help` lists them.

A command is declared once, where it runs (a Command in its module's COMMANDS); a module of
commands is named here once. See docs/reference/cli-internals.md.
"""

from . import alloc, commands, run, tokens, transfer, webhooks

COMMANDS = {command.name: command
            for module in (commands, transfer, alloc, run, tokens, webhooks) for command in module.COMMANDS}
