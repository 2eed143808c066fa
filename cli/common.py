"""What every pvcctl command shares: its context (the API client, made on first use), and
the small helpers for timeouts and one-line results."""

from __future__ import annotations

import click
from click.shell_completion import CompletionItem

from cli.client import ApiClient
from cli.errors import InputError
from cli.settings import resolve
from schemas import KINDS, kind_for, to_seconds
from schemas.resource import Resource


class Context:
    def __init__(
        self, server: str | None, config: str | None, context: str | None, token: str | None
    ) -> None:
        self._server = server
        self._config = config
        self._context = context
        self._token = token
        self._client: ApiClient | None = None

    @property
    def client(self) -> ApiClient:
        if self._client is None:
            settings = resolve(self._server, self._config, self._context, self._token)
            self._client = ApiClient(settings.server, settings.token, ca=settings.ca)
        return self._client


def seconds(timeout: str) -> float:
    try:
        return to_seconds(timeout)
    except ValueError as exc:
        raise InputError(f"--timeout: {exc}") from None


def told(kind: str, name: str, what: str) -> None:
    click.echo(f"{kind}/{name} {what}")


def kind_named(word: str) -> type[Resource]:
    """The kind a user typed (``vm``, ``vms``, ``VirtualMachine``); exit 2 naming the known."""
    try:
        return kind_for(word)
    except KeyError as exc:
        raise InputError(str(exc.args[0])) from None


def complete_kinds(
    _ctx: click.Context, _param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    head, _, last = incomplete.rpartition(",")
    prefix = f"{head}," if head else ""
    words = sorted({w for cls in KINDS for w in (cls.PLURAL, *cls.SHORT_NAMES[:1])})
    return [CompletionItem(prefix + w) for w in words if w.startswith(last)]
