"""pvcctl's exit codes: 2 for bad usage or input, 1 for a failure on the server's side."""

from __future__ import annotations

import click


class InputError(click.ClickException):
    exit_code = 2


class ServerError(click.ClickException):
    exit_code = 1
    status_code: int | None = None
    """The HTTP status, when the server answered at all."""
