"""What every pvcctl command shares: its context (the API client, made on first use), and
the small helpers for timeouts and one-line results."""

from __future__ import annotations

import click

from cli.client import ApiClient
from cli.errors import InputError
from cli.settings import resolve
from schemas import to_seconds


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
