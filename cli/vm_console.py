"""``pvcctl vm logs`` (a VM's serial console output, as its node published it) and ``pvcctl
vm dumpxml`` (the libvirt XML its node defined), and the follow loop of ``pvcctl events
-w``."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from cli.client import API, ApiClient, error_for
from cli.common import Context
from cli.completion import complete_vm_names
from cli.errors import InputError

if TYPE_CHECKING:
    import httpx
    from rich.console import Console

# httpx, rich and cli.output are imported where used: see cli.completion.

FOLLOW_INTERVAL = 1.0
"""Seconds between looks for new output while following (nodes publish at most every second)."""


def _get(client: ApiClient, path: str, params: dict[str, Any]) -> httpx.Response:
    """A GET whose answer is not JSON: the raw response, errors as the client makes them."""
    import httpx

    try:
        response = client._http.get(path, params=params)  # the raw body, not JSON
    except httpx.TransportError as exc:
        raise client._unreachable(exc) from None
    if response.status_code >= 400:
        raise error_for(response)
    return response


@click.command(name="logs")
@click.argument("name", shell_complete=complete_vm_names)
@click.option("-f", "--follow", is_flag=True, help="keep printing new output until Ctrl-C.")
@click.option(
    "--tail",
    type=click.IntRange(min=0),
    metavar="N",
    help="only the last N lines (of the newest 64 KiB the cluster keeps).",
)
@click.pass_obj
def logs(ctx: Context, name: str, follow: bool, tail: int | None) -> None:
    """Print the VM's serial console output, byte for byte, as its node last published it
    (at most every second while it changes; the newest 64 KiB are kept). Nothing is
    printed until the node has published some (libvirt's test driver runs no guest: its
    console is one line per boot)."""
    path = f"{API}/vms/{name}/console"
    response = _get(ctx.client, path, {"tail": tail} if tail is not None else {})
    _write(response.content)
    if not follow:
        return
    end, node = _position(response)
    try:
        while True:
            time.sleep(FOLLOW_INTERVAL)
            response = _get(ctx.client, path, {"since": end})
            new_end, new_node = _position(response)
            if new_node != node or new_end < end:
                # Another node's console (the VM moved), or a new log: all of it.
                response = _get(ctx.client, path, {})
                new_end, new_node = _position(response)
            _write(response.content)
            end, node = new_end, new_node
    except KeyboardInterrupt:
        return


def _position(response: httpx.Response) -> tuple[int, str]:
    end = response.headers.get("X-Console-End", "0")
    return (int(end) if end.isdigit() else 0), response.headers.get("X-Console-Node", "")


def _write(data: bytes) -> None:
    if data:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()


@click.command(name="dumpxml")
@click.argument("name", shell_complete=complete_vm_names)
@click.pass_obj
def dumpxml(ctx: Context, name: str) -> None:
    """Print the libvirt domain XML the VM's node defined (like virsh dumpxml --inactive;
    never secrets), published by the node within a second of each define. Exit 1 when no
    node has defined it yet."""
    response = _get(ctx.client, f"{API}/vms/{name}/domainxml", {})
    _write(response.content if response.content.endswith(b"\n") else response.content + b"\n")


def follow_events(
    client: ApiClient,
    out: Console,
    kind: str | None,
    name: str | None,
    limit: int,
    *,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """``pvcctl events -w``: the newest ``limit`` events, then each new one as it comes
    (looked for every FOLLOW_INTERVAL), until Ctrl-C."""
    from cli.output import render_events

    if limit < 1:
        raise InputError("--limit must be at least 1")
    seen = 0
    first = True
    try:
        while True:
            items = client.get(f"{API}/events", kind=kind, name=name, limit=limit)["items"]
            new = [e for e in items if int(e.get("seq", 0)) > seen]
            if new and first:
                render_events(new, out)
            elif new:
                _render_rows(new, out)
            if new:
                seen = max(int(e.get("seq", 0)) for e in new)
            first = False
            sleep(FOLLOW_INTERVAL)
    except KeyboardInterrupt:
        return


def _render_rows(items: list[dict[str, Any]], out: Console) -> None:
    """New events under the table already printed: the same columns, without a header."""
    from schemas.columns import age

    for event in items:
        involved = event.get("involvedObject") or {}
        out.print(
            "   ".join(
                [
                    age(event.get("timestamp")),
                    str(event.get("type", "")),
                    str(event.get("reason", "")),
                    f"{str(involved.get('kind', '')).lower()}/{involved.get('name', '')}",
                    str(event.get("message", "")),
                ]
            ),
            markup=False,
            highlight=False,
            emoji=False,
        )
