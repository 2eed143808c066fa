"""What every pvcctl command shares: its context (the API client, made on first use), and
the small helpers for timeouts and one-line results."""

from __future__ import annotations

import click
from click.shell_completion import CompletionItem

from cli.client import API, ApiClient
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
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    """Kind words (``vms``, ``vm,no``); after ``KIND/`` the kind's object names."""
    if "/" in incomplete:
        word, _, partial = incomplete.partition("/")
        return [CompletionItem(f"{word}/{n.value}") for n in _names(ctx, word, partial)]
    head, _, last = incomplete.rpartition(",")
    prefix = f"{head}," if head else ""
    words = sorted({w for cls in KINDS for w in (cls.PLURAL, *cls.SHORT_NAMES[:1])})
    return [CompletionItem(prefix + w) for w in words if w.startswith(last)]


COMPLETION_TIMEOUT_SECONDS = 1.0
"""Completion asks the API once and gives up after this: a slow or absent server offers
nothing rather than holding the shell."""


def complete_names(
    ctx: click.Context, _param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    """Names of the objects of the kind typed before (``get vm <TAB>``), from one GET."""
    word = ctx.params.get("kinds") or ctx.params.get("kind") or ""
    if not isinstance(word, str) or "/" in word or "," in word:
        return []
    return _names(ctx, word, incomplete)


def _names(ctx: click.Context, word: str, incomplete: str) -> list[CompletionItem]:
    try:
        cls = kind_for(word)
    except KeyError:
        return []
    root = ctx.find_root().params
    try:
        settings = resolve(
            root.get("server"), root.get("config_path"), root.get("context_name"), root.get("token")
        )
        client = ApiClient(
            settings.server, settings.token, timeout=COMPLETION_TIMEOUT_SECONDS, ca=settings.ca
        )
        try:
            items = client.get(f"{API}/{cls.PLURAL}")["items"]
        finally:
            client.close()
        names = sorted(str(item["metadata"]["name"]) for item in items)
    except (click.ClickException, OSError, KeyError, TypeError):
        return []  # no server, no config, an odd answer: no suggestions, never a traceback
    return [CompletionItem(n) for n in names if n.startswith(incomplete)]


def split_target(kind: str, name: str | None) -> tuple[type[Resource], str | None]:
    """``KIND NAME`` or ``KIND/NAME`` (kubectl's two spellings) as (kind, name or None).

    Exit 2 for an unknown kind, an empty name (``vm/``), or both spellings at once.
    """
    word, slash, inline = kind.partition("/")
    cls = kind_named(word)
    if not slash:
        _no_slash(name)
        return cls, name
    _no_slash(inline)
    if not inline:
        raise InputError(f"{kind!r}: a name goes after the '/', e.g. {word}/NAME")
    if name is not None:
        raise InputError(
            f"give either {kind} or {word} {name}, not both: KIND/NAME already names the object"
        )
    return cls, inline


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
