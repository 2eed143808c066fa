"""pvcctl get, describe and events: read objects and show them (the formats are in
cli/output.py)."""

from __future__ import annotations

import time

import click

from cli.client import API
from cli.common import Context, complete_kinds, kind_named, seconds
from cli.errors import InputError, ServerError
from cli.output import FORMATS, console, describe, render, render_events, watch_row
from schemas.resource import Resource


@click.command()
@click.argument("kinds", shell_complete=complete_kinds)
@click.argument("name", required=False)
@click.option(
    "-o", "--output", "fmt", type=click.Choice(FORMATS), default="table", show_default=True
)
@click.option("-l", "--selector", help="label selector, e.g. app=web,tier!=db")
@click.option("-w", "--watch", "watch_", is_flag=True, help="after listing, print each change.")
@click.option("--timeout", help="with -w: stop watching after this long (default: never).")
@click.pass_obj
def get(
    ctx: Context,
    kinds: str,
    name: str | None,
    fmt: str,
    selector: str | None,
    watch_: bool,
    timeout: str | None,
) -> None:
    """Show objects: KIND[,KIND...] [NAME]."""
    classes = [kind_named(k) for k in kinds.split(",") if k]
    if not classes:
        raise InputError("no kind given")
    if name and len(classes) > 1:
        raise InputError("a NAME goes with one kind only")
    if watch_ and len(classes) > 1:
        raise InputError("-w watches one kind at a time")
    out = console()
    version: str | None = None
    for i, cls in enumerate(classes):
        if name:
            items = [ctx.client.get(f"{API}/{cls.PLURAL}/{name}")]
        else:
            listed = ctx.client.get(f"{API}/{cls.PLURAL}", labelSelector=selector)
            items = listed["items"]
            version = (listed.get("metadata") or {}).get("resourceVersion")
        if fmt in ("table", "wide") and i:
            out.print()
        if not items and fmt in ("table", "wide"):
            click.echo(f"No {cls.PLURAL} found.", err=True)
            continue
        render(cls.KIND, items, fmt, out)
    if watch_:
        _watch(ctx, classes[0], name, selector, fmt, version, timeout)


def _watch(
    ctx: Context,
    cls: type[Resource],
    name: str | None,
    selector: str | None,
    fmt: str,
    version: str | None,
    timeout: str | None,
) -> None:
    deadline = time.monotonic() + seconds(timeout) if timeout else None
    while deadline is None or time.monotonic() < deadline:
        left = 3600.0 if deadline is None else deadline - time.monotonic()
        try:
            for event in ctx.client.watch(cls.PLURAL, version, left, selector):
                obj = event["object"]
                version = event.get("resourceVersion", version)
                if name and obj["metadata"]["name"] != name:
                    continue
                click.echo(watch_row(cls.KIND, event["type"], obj, fmt))
        except ServerError as exc:
            if "(410" not in exc.message:
                raise
            version = None  # too old: start over from a fresh list of everything


@click.command(name="describe")
@click.argument("kind", shell_complete=complete_kinds)
@click.argument("name")
@click.pass_obj
def describe_cmd(ctx: Context, kind: str, name: str) -> None:
    """Show one object's spec, status, conditions and recent events."""
    cls = kind_named(kind)
    out = console()
    describe(ctx.client.get(f"{API}/{cls.PLURAL}/{name}"), out)
    events = ctx.client.get(f"{API}/events", kind=cls.KIND, name=name, limit=10)["items"]
    out.print("[bold]Events:[/bold]")
    if events:
        render_events(events, out, indent=True)
    else:
        out.print("  <none>")


@click.command()
@click.argument("kind", required=False, shell_complete=complete_kinds)
@click.argument("name", required=False)
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 1000))
@click.pass_obj
def events(ctx: Context, kind: str | None, name: str | None, limit: int) -> None:
    """Recent cluster events, oldest first: [KIND [NAME]]."""
    kind_name = kind_named(kind).KIND if kind else None
    items = ctx.client.get(f"{API}/events", kind=kind_name, name=name, limit=limit)["items"]
    if not items:
        click.echo("No events found.", err=True)
        return
    render_events(items, console())
