"""Shell completion of kinds and object names, made to answer before the user notices.

The shell runs pvcctl on every <TAB>, so this module (and what builds the command tree)
imports nothing heavy: kinds come from ``cli.kindwords``, and names from one plain GET of
the kind's list with the standard library's http.client (httpx alone takes longer to import
than the whole answer may take), with a short timeout. A slow or absent server, a bad config
or an odd answer offers nothing: never a traceback, never a hung shell.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

import click
from click.shell_completion import CompletionItem

from cli.client import API
from cli.kindwords import KIND_WORDS, kind_words_for
from cli.settings import resolve

COMPLETION_TIMEOUT_SECONDS = 1.0
"""Completion asks the API once and gives up after this: a slow or absent server offers
nothing rather than holding the shell."""


def complete_kinds(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    """Kind words (``vms``, ``vm,no``); after ``KIND/`` the kind's object names."""
    if "/" in incomplete:
        word, _, partial = incomplete.partition("/")
        return [CompletionItem(f"{word}/{n.value}") for n in _names(ctx, word, partial)]
    head, _, last = incomplete.rpartition(",")
    prefix = f"{head}," if head else ""
    words = sorted({w for k in KIND_WORDS for w in (k.plural, *k.short_names[:1])})
    return [CompletionItem(prefix + w) for w in words if w.startswith(last)]


def complete_names(
    ctx: click.Context, _param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    """Names of the objects of the kind typed before (``get vm <TAB>``), from one GET."""
    word = ctx.params.get("kinds") or ctx.params.get("kind") or ""
    if not isinstance(word, str) or "/" in word or "," in word:
        return []
    return _names(ctx, word, incomplete)


def complete_vm_names(
    ctx: click.Context, _param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    """VM names, for the ``vm`` verbs (``vm start <TAB>``)."""
    return _names(ctx, "vms", incomplete)


def complete_node_names(
    ctx: click.Context, _param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    """Node names, for the ``node`` verbs and ``--to``/``--node`` options."""
    return _names(ctx, "nodes", incomplete)


def _names(ctx: click.Context, word: str, incomplete: str) -> list[CompletionItem]:
    kind = kind_words_for(word)
    if kind is None:
        return []
    root = ctx.find_root().params
    try:
        settings = resolve(
            root.get("server"), root.get("config_path"), root.get("context_name"), root.get("token")
        )
        items = list_objects(settings.server, settings.token, settings.ca, kind.plural)
        names = sorted(str(item["metadata"]["name"]) for item in items)
    except (click.ClickException, OSError, ValueError, KeyError, TypeError):
        return []  # no server, no config, an odd answer: no suggestions, never a traceback
    return [CompletionItem(n) for n in names if n.startswith(incomplete)]


def list_objects(server: str, token: str | None, ca: str | None, plural: str) -> list[Any]:
    """The kind's objects from one GET; OSError (http.client's errors too) when it fails."""
    import http.client  # (which imports ssl): only when a name is to be completed

    url = urlsplit(server)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise ValueError(f"not an http(s) URL: {server}")
    conn: http.client.HTTPConnection
    if url.scheme == "https":
        import ssl

        context = ssl.create_default_context(cafile=ca)
        conn = http.client.HTTPSConnection(
            url.hostname, url.port, timeout=COMPLETION_TIMEOUT_SECONDS, context=context
        )
    else:
        conn = http.client.HTTPConnection(
            url.hostname, url.port, timeout=COMPLETION_TIMEOUT_SECONDS
        )
    headers = {"Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        conn.request("GET", f"{url.path.rstrip('/')}{API}/{plural}", headers=headers)
        response = conn.getresponse()
        if response.status != 200:
            raise ValueError(f"the API answered {response.status}")
        items = json.loads(response.read())["items"]
    except http.client.HTTPException as exc:
        raise OSError(str(exc)) from None
    finally:
        conn.close()
    if not isinstance(items, list):
        raise TypeError("items is not a list")
    return items
