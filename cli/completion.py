"""Shell completion of kinds and object names, made to answer before the user notices.

The shell runs pvcctl on every <TAB>, so this module (and what builds the command tree)
imports nothing heavy: kinds come from ``cli.kindwords``, and names from one plain GET of
``/api/v1/names/PLURAL`` (names only: small even for 10,000 VMs) with the standard library's
http.client (httpx alone takes longer to import than the whole answer may take), with a
short timeout. A slow or absent server, a bad config
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
        names = object_names(settings.server, settings.token, settings.ca, kind.plural)
    except (click.ClickException, OSError, ValueError, KeyError, TypeError):
        return []  # no server, no config, an odd answer: no suggestions, never a traceback
    return [CompletionItem(n) for n in names if n.startswith(incomplete)]


def object_names(server: str, token: str | None, ca: str | None, plural: str) -> list[str]:
    """The kind's object names from one GET of ``/names/PLURAL``; from the whole list when
    the server is older and has no such path (404). OSError when the API cannot answer."""
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
    base = url.path.rstrip("/") + API
    try:
        answer = _get(conn, f"{base}/names/{plural}", headers)
        if answer is not None:
            return [str(n) for n in answer["names"]]
        listed = _get(conn, f"{base}/{plural}", headers)
        if listed is None:
            raise ValueError(f"no {plural} at {server}")
        return sorted(str(item["metadata"]["name"]) for item in listed["items"])
    except http.client.HTTPException as exc:
        raise OSError(str(exc)) from None
    finally:
        conn.close()


def _get(conn: Any, path: str, headers: dict[str, str]) -> Any:
    """The JSON answer of one GET on the open connection; None for 404."""
    conn.request("GET", path, headers=headers)
    response = conn.getresponse()
    body = response.read()
    if response.status == 404:
        return None
    if response.status != 200:
        raise ValueError(f"the API answered {response.status}")
    return json.loads(body)
