"""A click group whose subcommands are imported when one is used, not when pvcctl starts.

The shell runs pvcctl on every <TAB>: ``pvcctl get vms <TAB>`` needs the ``get`` command
only, so the modules of the others (edit, vm, wait, config, cluster data) stay unimported.
``--help`` lists every command, and imports them all then.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

import click


class LazyGroup(click.Group):
    """``lazy`` maps a command name to ``"module:attribute"``; ``then`` (optional) is
    called with the command once it is imported (to add subcommands of its own)."""

    def __init__(
        self,
        *args: object,
        lazy: dict[str, str] | None = None,
        then: dict[str, Callable[[click.Command], None]] | None = None,
        **kwargs: object,
    ) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.lazy = dict(lazy or {})
        self.then = dict(then or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy and cmd_name not in self.commands:
            module, _, attribute = self.lazy[cmd_name].partition(":")
            command = getattr(importlib.import_module(module), attribute)
            if cmd_name in self.then:
                self.then[cmd_name](command)
            self.add_command(command, cmd_name)
        return super().get_command(ctx, cmd_name)
