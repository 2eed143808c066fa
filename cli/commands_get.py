"""pvcctl get, describe and events: read objects and show them (the formats are in
cli/output.py)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import click
from click.shell_completion import CompletionItem

from cli.client import API
from cli.common import (
    Context,
    complete_kinds,
    complete_names,
    kind_words_named,
    seconds,
    split_target_words,
)
from cli.errors import InputError, ServerError
from cli.kindwords import KindWords

if TYPE_CHECKING:
    from cli.output import Format

# cli.output (rich, yaml) and cli.jsonpath are imported in the commands: see cli.completion.

_OUTPUT_HELP = (
    "table, wide, yaml, json, name, jsonpath=TEMPLATE (kubectl's: '{.items[*].metadata.name}', "
    "'{range .items[*]}{.metadata.name}{\"\\n\"}{end}') or custom-columns=HEADER:PATH,... "
    "(e.g. NAME:.metadata.name,NODE:.status.node). json, yaml and jsonpath see the object "
    "for KIND NAME and the List (apiVersion, kind, items) otherwise, whatever the count."
)


def _complete_formats(
    _ctx: click.Context, _param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    from cli.output import FORMATS

    words = [*FORMATS, "jsonpath=", "custom-columns="]
    return [CompletionItem(w) for w in words if w.startswith(incomplete)]


@click.command()
@click.argument("kinds", metavar="KIND[,KIND...]|KIND/NAME", shell_complete=complete_kinds)
@click.argument("name", required=False, shell_complete=complete_names)
@click.option(
    "-o",
    "--output",
    "fmt",
    default="table",
    show_default=True,
    metavar="FORMAT",
    shell_complete=_complete_formats,
    help=_OUTPUT_HELP,
)
@click.option("-l", "--selector", help="label selector, e.g. app=web,tier!=db")
@click.option(
    "--sort-by",
    metavar="PATH",
    help="sort by this JSONPath of each object, e.g. .metadata.name or .spec.memory "
    "(numbers and sizes by value, then text; objects without it last).",
)
@click.option(
    "-L",
    "--label-columns",
    "label_columns",
    multiple=True,
    metavar="KEY[,KEY...]",
    help="table and wide: a column for each of these labels (repeatable).",
)
@click.option("-w", "--watch", "watch_", is_flag=True, help="after listing, print each change.")
@click.option("--timeout", help="with -w: stop watching after this long (default: never).")
@click.pass_obj
def get(
    ctx: Context,
    kinds: str,
    name: str | None,
    fmt: str,
    selector: str | None,
    sort_by: str | None,
    label_columns: tuple[str, ...],
    watch_: bool,
    timeout: str | None,
) -> None:
    """Show objects: KIND[,KIND...] [NAME], or KIND/NAME."""
    from cli.jsonpath import compile_path
    from cli.output import (
        PlainOut,
        parse_format,
        render,
        render_document,
        sort_items,
        write_table,
    )

    output = parse_format(fmt)
    sort_path = compile_path(sort_by) if sort_by else None
    labels = tuple(k.strip() for part in label_columns for k in part.split(",") if k.strip())
    if labels and output.name not in ("table", "wide"):
        raise InputError("-L/--label-columns goes with -o table or wide")
    if "/" in kinds:
        if "," in kinds:
            raise InputError("KIND/NAME names one object: give KIND[,KIND...] or KIND/NAME")
        cls, name = split_target_words(kinds, name)
        classes = [cls]
    else:
        classes = [kind_words_named(k) for k in kinds.split(",") if k]
    if not classes:
        raise InputError("no kind given")
    if name and len(classes) > 1:
        raise InputError("a NAME goes with one kind only")
    if watch_ and len(classes) > 1:
        raise InputError("-w watches one kind at a time")
    out = PlainOut()  # rows and documents are never styled: no rich to import
    version: str | None = None
    documents: list[dict[str, Any]] = []
    # A plain table of a list: the API sends the rows (view=table), not every object whole.
    rows_only = output.name in ("table", "wide") and not (name or sort_path or labels)
    for i, cls in enumerate(classes):
        if rows_only:
            table = ctx.client.get(f"{API}/{cls.PLURAL}", labelSelector=selector, view=output.name)
            version = (table.get("metadata") or {}).get("resourceVersion")
            if i:
                out.print()
            # An API from before view=table (a host not upgraded yet) sends the List.
            is_table = table.get("kind") == "Table"
            if not (table["rows"] if is_table else table.get("items")):
                click.echo(f"No {cls.PLURAL} found.", err=True)
            elif is_table:
                write_table(out, table["columns"], table["rows"])
            else:
                render(cls.KIND, table["items"], output, out)
            continue
        if name:
            doc = ctx.client.get(f"{API}/{cls.PLURAL}/{name}")
            items = [doc]
        else:
            doc = ctx.client.get(f"{API}/{cls.PLURAL}", labelSelector=selector)
            items = doc["items"]
            if sort_path:
                items = sort_items(items, sort_path)
                doc = {**doc, "items": items}
            version = (doc.get("metadata") or {}).get("resourceVersion")
        if output.document:
            documents.append(doc)
            continue
        if output.name != "name" and i:
            out.print()
        if not items and output.name != "name":
            click.echo(f"No {cls.PLURAL} found.", err=True)
            continue
        render(cls.KIND, items, output, out, labels)
    if documents:
        render_document(_one_document(documents), output, out)
    if watch_:
        _watch(ctx, classes[0], name, selector, output, version, timeout)


def _one_document(documents: list[dict[str, Any]]) -> dict[str, Any]:
    """The one object or List the API returned; several kinds' Lists in one List, as kubectl."""
    if len(documents) == 1:
        return documents[0]
    items = [item for doc in documents for item in doc["items"]]
    return {"apiVersion": "pvc/v1", "kind": "List", "items": items}


def _watch(
    ctx: Context,
    cls: KindWords,
    name: str | None,
    selector: str | None,
    fmt: Format,
    version: str | None,
    timeout: str | None,
) -> None:
    from cli.output import watch_row

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
@click.argument("kind", metavar="KIND NAME|KIND/NAME", shell_complete=complete_kinds)
@click.argument("name", required=False, metavar="", shell_complete=complete_names)
@click.pass_obj
def describe_cmd(ctx: Context, kind: str, name: str | None) -> None:
    """Show one object's spec, status, conditions and recent events: KIND NAME or KIND/NAME."""
    from rich.text import Text

    from cli.output import console, describe, render_events

    cls, name = split_target_words(kind, name)
    if not name:
        raise InputError(f"describe needs a name: {kind} NAME or {kind}/NAME")
    out = console()
    describe(ctx.client.get(f"{API}/{cls.PLURAL}/{name}"), out)
    events = ctx.client.get(f"{API}/events", kind=cls.KIND, name=name, limit=10)["items"]
    out.print(Text("Events:", style="bold"))
    if events:
        render_events(events, out, indent=True)
    else:
        out.print(Text("  <none>"))


@click.command()
@click.argument(
    "kind", required=False, metavar="[KIND [NAME]|KIND/NAME]", shell_complete=complete_kinds
)
@click.argument("name", required=False, metavar="", shell_complete=complete_names)
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 1000))
@click.option(
    "-w", "--watch", "watch_", is_flag=True, help="after the recent ones, print each new event "
    "as it comes, until Ctrl-C."
)  # fmt: skip
@click.pass_obj
def events(ctx: Context, kind: str | None, name: str | None, limit: int, watch_: bool) -> None:
    """Recent cluster events, oldest first: of everything, of a KIND, or of one object
    (KIND NAME or KIND/NAME)."""
    from cli.output import console, render_events

    kind_name = None
    if kind:
        cls, name = split_target_words(kind, name)
        kind_name = cls.KIND
    if watch_:
        from cli.vm_console import follow_events

        follow_events(ctx.client, console(), kind_name, name, limit)
        return
    items = ctx.client.get(f"{API}/events", kind=kind_name, name=name, limit=limit)["items"]
    if not items:
        click.echo("No events found.", err=True)
        return
    render_events(items, console())
