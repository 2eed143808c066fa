"""Render objects as kubectl does: table, wide, yaml, json or name."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any, Protocol

from cli.errors import InputError
from schemas.columns import COLUMNS, age

if TYPE_CHECKING:
    from rich.console import Console
    from rich.text import Text

    from cli.jsonpath import Path, Template

# rich, yaml, cli.jsonpath (jsonpath-ng) and schemas (pydantic, for sizes) are imported by
# the formats that use them: a table of VMs and -o json need none of them.


class Out(Protocol):
    """Where rows and documents go: a rich Console, or ``PlainOut`` where nothing is styled."""

    @property
    def file(self) -> IO[str]: ...

    def print(self) -> None: ...


class PlainOut:
    """Standard output without rich (which takes longer to import than a table of 10,000
    VMs takes to render): for get's rows and documents, never styled."""

    @property
    def file(self) -> IO[str]:
        return sys.stdout

    def print(self) -> None:
        sys.stdout.write("\n")


Row = Callable[[dict[str, Any]], list[str]]
FORMATS = ("table", "wide", "yaml", "json", "name")


def console() -> Console:
    from rich.console import Console

    # Off a terminal, never wrap or cut columns: scripts parse this output.
    # emoji off: a MAC's ":ab:" is data, not an emoji code. User text goes in as Text (never
    # parsed as markup): a label "[prod]" shows, "[/bold]" does not break the output.
    return Console(width=None if sys.stdout.isatty() else 10_000, highlight=False, emoji=False)


@dataclass(frozen=True)
class Format:
    """What ``-o`` asked for, parsed before any request so a bad one fetches nothing."""

    name: str
    template: Template | None = None
    columns: tuple[tuple[str, Path], ...] = ()

    @property
    def document(self) -> bool:
        """Printed once for the whole answer: the object, or the List (json, yaml, jsonpath)."""
        return self.name in ("json", "yaml", "jsonpath")


def parse_format(text: str) -> Format:
    """table, wide, yaml, json, name, jsonpath=TEMPLATE or custom-columns=HEADER:PATH,..."""
    kind, eq, arg = text.partition("=")
    if kind == "jsonpath" and eq:
        from cli.jsonpath import compile_template

        return Format("jsonpath", template=compile_template(arg))
    if kind == "custom-columns" and eq:
        return Format("custom-columns", columns=_custom_columns(arg))
    if text in FORMATS:
        return Format(text)
    raise InputError(
        f"-o {text!r}: expected one of {', '.join(FORMATS)}, jsonpath=TEMPLATE or "
        "custom-columns=HEADER:PATH[,HEADER:PATH...]"
    )


def _custom_columns(spec: str) -> tuple[tuple[str, Path], ...]:
    from cli.jsonpath import compile_path

    columns = []
    for part in spec.split(","):
        header, colon, path = part.partition(":")
        if not colon or not header.strip() or not path.strip():
            raise InputError(
                f"custom-columns: {part!r} is not HEADER:PATH, e.g. NAME:.metadata.name"
            )
        columns.append((header.strip(), compile_path(path)))
    return tuple(columns)


def sort_items(items: list[dict[str, Any]], path: Path) -> list[dict[str, Any]]:
    """By the path's first match: numbers and sizes (1Gi) by value, then text; none last."""
    from cli.jsonpath import text_of
    from schemas.quantity import to_bytes

    def key(item: dict[str, Any]) -> tuple[int, float, str]:
        found = path.find(item, item)
        if not found or found[0] is None:
            return (3, 0.0, "")
        value = found[0]
        if isinstance(value, int | float) and not isinstance(value, bool):
            return (0, float(value), "")
        if isinstance(value, str):
            try:
                return (0, float(to_bytes(value)), value)
            except ValueError:
                return (1, 0.0, value)
        return (2, 0.0, text_of(value))

    return sorted(items, key=key)


def label_header(key: str) -> str:
    """kubectl's -L column title: the key's last part, in capitals (app.io/tier -> TIER)."""
    return key.rsplit("/", 1)[-1].upper()


def render_document(doc: dict[str, Any], fmt: Format, out: Out) -> None:
    """The object or the List as the API returned it (json, yaml) or through a template.

    Written straight to the file, never through rich, whose emoji codes would turn a MAC's
    ":ab:" into an emoji and whose markup would eat "[prod]".
    """
    if fmt.name == "json":
        _write(out, json_text(doc) + "\n")
    elif fmt.name == "yaml":
        import yaml

        _write(out, yaml.safe_dump(doc, sort_keys=False))
    elif fmt.template is not None:
        _write(out, fmt.template.render(doc))


def json_text(doc: Any) -> str:
    """``json.dumps(doc, indent=2)``, made by orjson (the standard library's indenting
    encoder is pure Python: most of ``get -o json`` over 10,000 VMs). The same text for
    what the API sends; the standard library's when orjson would differ (non-ASCII text,
    which it does not escape, or integers beyond 64 bits)."""
    import orjson

    try:
        text = orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode()
    except TypeError:
        return json.dumps(doc, indent=2)
    return text if text.isascii() else json.dumps(doc, indent=2)


def render(
    kind: str,
    items: list[dict[str, Any]],
    fmt: Format | str,
    out: Out,
    labels: tuple[str, ...] = (),
) -> None:
    """One kind's objects as rows: table, wide, name or custom-columns; ``labels`` (-L) add
    a column each to table and wide."""
    if isinstance(fmt, str):
        fmt = parse_format(fmt)
    if fmt.name == "name":
        _write(out, "".join(f"{kind.lower()}/{item['metadata']['name']}\n" for item in items))
        return
    if fmt.columns:
        headers = [h for h, _ in fmt.columns]
        rows = [[_cell(path, item) for _, path in fmt.columns] for item in items]
        _write(out, plain_table(headers, rows))
        return
    base, extra, row = COLUMNS[kind]
    wide = fmt.name == "wide"
    headers = base + (extra if wide else []) + [label_header(k) for k in labels]
    rows = [row(item, wide) + _label_cells(item, labels) for item in items]
    _write(out, plain_table(headers, rows))


def _cell(path: Path, item: dict[str, Any]) -> str:
    from cli.jsonpath import text_of

    found = [text_of(v) for v in path.find(item, item) if v is not None]
    return ",".join(found) if found else "<none>"


def _label_cells(item: dict[str, Any], labels: tuple[str, ...]) -> list[str]:
    values = item["metadata"].get("labels") or {}
    return [str(values.get(key, "")) for key in labels]


def write_table(out: Out, headers: list[str], rows: list[list[str]]) -> None:
    _write(out, plain_table(headers, rows))


def _write(out: Out, text: str) -> None:
    out.file.write(text)
    out.file.flush()


def plain_table(headers: list[str], rows: list[list[str]]) -> str:
    """Columns padded to their widest cell, three spaces apart, never wrapped (kubectl's look).

    Plain string work, not a rich Table: rendering 10,000 rows must take
    milliseconds, and scripts parse this output.
    """
    widths = [len(h) for h in headers]
    for cells in rows:
        for i, cell in enumerate(cells):
            widths[i] = max(widths[i], len(cell))
    last = len(headers) - 1
    lines = [
        "   ".join(c if i == last else c.ljust(widths[i]) for i, c in enumerate(cells)).rstrip()
        for cells in [headers, *rows]
    ]
    return "\n".join(lines) + "\n"


def _field(label: str, value: Any, width: int = 13) -> Text:
    from rich.text import Text

    """A bold label and the user's text as it is (never parsed as markup)."""
    return Text.assemble((f"{label}:".ljust(width), "bold"), str(value))


def _heading(label: str) -> Text:
    from rich.text import Text

    return Text(f"{label}:", style="bold")


def describe(obj: dict[str, Any], out: Console) -> None:
    import yaml
    from rich.table import Table
    from rich.text import Text

    meta = obj["metadata"]
    out.print(_field("Name", meta["name"]))
    out.print(_field("Kind", obj["kind"]))
    for key in ("labels", "annotations"):
        values = meta.get(key) or {}
        text = ", ".join(f"{k}={v}" for k, v in values.items()) or "<none>"
        out.print(_field(key.capitalize(), text))
    out.print(_field("Created", meta.get("creationTimestamp", "-")))
    if meta.get("deletionTimestamp"):
        waiting = ", ".join(meta.get("finalizers") or []) or "nothing"
        out.print(_field("Terminating", f"since {meta['deletionTimestamp']} (waits for {waiting})"))
    elif meta.get("finalizers"):
        out.print(_field("Finalizers", ", ".join(meta["finalizers"])))
    out.print(
        _field(
            "Generation",
            f"{meta.get('generation', '-')}   resourceVersion: {meta.get('resourceVersion', '-')}",
        )
    )
    out.print(_heading("Spec"))
    out.print(Text(_indent(yaml.safe_dump(obj.get("spec", {}), sort_keys=False))))
    status = dict(obj.get("status") or {})
    conditions = status.pop("conditions", [])
    out.print(_heading("Status"))
    out.print(Text(_indent(yaml.safe_dump(status, sort_keys=False) if status else "<none>\n")))
    out.print(_heading("Conditions"))
    if not conditions:
        out.print(Text("  <none>"))
        return
    table = Table(box=None, show_edge=False, header_style="bold")
    for header in ("TYPE", "STATUS", "REASON", "MESSAGE", "LAST-TRANSITION"):
        table.add_column(header)
    for cond in conditions:
        keys = ("type", "status", "reason", "message", "lastTransitionTime")
        table.add_row(*(Text(str(cond.get(k, ""))) for k in keys))
    out.print(table)


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.rstrip("\n").splitlines())


def render_events(items: list[dict[str, Any]], out: Console, indent: bool = False) -> None:
    from rich.table import Table
    from rich.text import Text

    table = Table(box=None, show_edge=False, pad_edge=indent, header_style="bold")
    for header in ("AGE", "TYPE", "REASON", "OBJECT", "MESSAGE"):
        table.add_column(header, no_wrap=header != "MESSAGE")
    for event in items:
        involved = event.get("involvedObject") or {}
        table.add_row(
            age(event.get("timestamp")),
            Text(str(event.get("type", ""))),
            Text(str(event.get("reason", ""))),
            Text(f"{str(involved.get('kind', '')).lower()}/{involved.get('name', '')}"),
            Text(str(event.get("message", ""))),
        )
    out.print(table)


def watch_row(kind: str, event_type: str, obj: dict[str, Any], fmt: Format) -> str:
    """One line per watch event: the table row with the event type in front, or the object."""
    import yaml

    if fmt.name == "json":
        return json.dumps({"type": event_type, "object": obj}, separators=(",", ":"))
    if fmt.name == "yaml":
        return "---\n" + yaml.safe_dump({"type": event_type, "object": obj}, sort_keys=False)
    if fmt.name == "name":
        return f"{event_type} {kind.lower()}/{obj['metadata']['name']}"
    if fmt.template is not None:
        return fmt.template.render(obj)
    if fmt.columns:
        return "   ".join([event_type, *(_cell(path, obj) for _, path in fmt.columns)])
    _, _, row = COLUMNS[kind]
    return "   ".join([event_type, *row(obj, fmt.name == "wide")])
