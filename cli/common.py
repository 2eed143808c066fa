"""What every pvcctl command shares: its context (the API client, made on first use), and
the small helpers for timeouts, kinds and one-line results.

Every module that builds the command tree imports only what ``--help`` and shell completion
need: ``schemas`` (pydantic), httpx, rich, yaml and jsonpath are imported where a command
runs (a test keeps it so)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import click

from cli.client import ApiClient
from cli.completion import complete_kinds, complete_names
from cli.errors import InputError
from cli.kindwords import KindWords, kind_words_for, unknown_kind
from cli.settings import resolve

if TYPE_CHECKING:
    from schemas.resource import Resource

__all__ = [
    "Context",
    "complete_kinds",
    "complete_names",
    "kind_named",
    "kind_words_named",
    "seconds",
    "split_target",
    "split_target_words",
    "split_targets",
    "told",
]


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
    from schemas import to_seconds

    try:
        return to_seconds(timeout)
    except ValueError as exc:
        raise InputError(f"--timeout: {exc}") from None


def told(kind: str, name: str, what: str) -> None:
    click.echo(f"{kind}/{name} {what}")


def kind_named(word: str) -> type[Resource]:
    """The kind a user typed (``vm``, ``vms``, ``VirtualMachine``); exit 2 naming the known."""
    from schemas import kind_for

    try:
        return kind_for(word)
    except KeyError as exc:
        raise InputError(str(exc.args[0])) from None


def kind_words_named(word: str) -> KindWords:
    """``kind_named`` without the models (schemas, pydantic): for commands that only name
    a kind's objects (get, describe, events)."""
    found = kind_words_for(word)
    if found is None:
        raise InputError(unknown_kind(word))
    return found


def split_target(kind: str, name: str | None) -> tuple[type[Resource], str | None]:
    """``KIND NAME`` or ``KIND/NAME`` (kubectl's two spellings) as (kind, name or None).

    Exit 2 for an unknown kind, an empty name (``vm/``), or both spellings at once.
    """
    word, target = _split(kind, name, kind_named)
    return kind_named(word), target


def split_target_words(kind: str, name: str | None) -> tuple[KindWords, str | None]:
    """``split_target`` without the models: the kind's words (KIND, PLURAL)."""
    word, target = _split(kind, name, kind_words_named)
    return kind_words_named(word), target


def _split(kind: str, name: str | None, resolve: Callable[[str], object]) -> tuple[str, str | None]:
    word, slash, inline = kind.partition("/")
    resolve(word)  # an unknown kind first
    if not slash:
        _no_slash(name)
        return word, name
    _no_slash(inline)
    if not inline:
        raise InputError(f"{kind!r}: a name goes after the '/', e.g. {word}/NAME")
    if name is not None:
        raise InputError(
            f"give either {kind} or {word} {name}, not both: KIND/NAME already names the object"
        )
    return word, inline


def _no_slash(name: str | None) -> None:
    if name is not None and "/" in name:
        raise InputError(f"{name!r} is no object name: names hold no '/' (KIND/NAME or KIND NAME)")


def split_targets(words: tuple[str, ...]) -> list[tuple[type[Resource], str]]:
    """``KIND NAME...`` or ``KIND/NAME...`` (kinds may differ) as (kind, name) pairs."""
    if not words:
        return []
    if "/" not in words[0]:
        cls = kind_named(words[0])
        if len(words) == 1:
            raise InputError(f"no name given for {words[0]}: KIND NAME... or KIND/NAME...")
        for word in words[1:]:
            _no_slash(word)
        return [(cls, word) for word in words[1:]]
    pairs: list[tuple[type[Resource], str]] = []
    for word in words:
        if "/" not in word:
            raise InputError(f"{word!r}: after a KIND/NAME, every object is KIND/NAME too")
        cls, name = split_target(word, None)
        pairs.append((cls, str(name)))
    return pairs
