"""Render objects as kubectl does: table, wide, yaml, json or name."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, TYPE_CHECKING, Any, Protocol

from cli.errors import InputError

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


def age(timestamp: str | None) -> str:
    if not timestamp:
        return "-"
    try:
        # fromisoformat, not strptime: written in C, 10,000 rows in milliseconds (strptime
        # took most of a 10,000-VM table's time). It reads the API's "...T12:00:00.000000Z".
        then = datetime.fromisoformat(timestamp)
    except ValueError:
        return "-"
    if then.tzinfo is None:
        then = then.replace(tzinfo=UTC)
    seconds = int((datetime.now(UTC) - then).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{max(seconds, 0)}s"


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any] | None:
    for cond in (obj.get("status") or {}).get("conditions", []):
        if cond.get("type") == type_:
            return dict(cond)
    return None


def _mib(value: int) -> str:
    from schemas.quantity import format_bytes

    return format_bytes(value) if value else "0"


def _vm_row(obj: dict[str, Any], wide: bool) -> list[str]:
    spec, status = obj["spec"], obj.get("status") or {}
    ready = condition(obj, "Ready")
    # As kubectl: an object being deleted shows Terminating, whatever its node last said.
    terminating = obj["metadata"].get("deletionTimestamp")
    row = [
        obj["metadata"]["name"],
        "Terminating" if terminating else status.get("phase", "Pending"),
        status.get("node") or "-",
        str(spec.get("vcpus", "")),
        spec.get("memory", ""),
        (ready or {}).get("status", "Unknown"),
        age(obj["metadata"].get("creationTimestamp")),
    ]
    if wide:
        placement = spec.get("placement", {})
        row += [
            spec.get("runStrategy", ""),
            ",".join(placement.get("nodes", [])) or "<any>",
            status.get("lastNode") or "-",
            status.get("reason") or "-",
        ]
    return row


def _node_row(obj: dict[str, Any], wide: bool) -> list[str]:
    spec, status = obj.get("spec", {}), obj.get("status") or {}
    res = status.get("resources", {})
    ready = condition(obj, "Ready")
    row = [
        obj["metadata"]["name"],
        "Ready" if (ready or {}).get("status") == "True" else "NotReady",
        status.get("daemonState", "-"),
        status.get("routerState", "-"),
        status.get("domainState", "-"),
        str(res.get("vmCount", 0)),
        f"{_mib(res.get('memoryAllocated', 0))}/{_mib(res.get('memoryTotal', 0))}",
        age(obj["metadata"].get("creationTimestamp")),
    ]
    if wide:
        row += [
            "yes" if spec.get("coordinator") else "no",
            f"{res.get('vcpusAllocated', 0)}/{res.get('vcpusTotal', 0)}",
            f"{res.get('load', 0):.2f}",
            status.get("lastHeartbeat") or "-",
            status.get("hypervisor") or "-",
        ]
    return row


def _network_row(obj: dict[str, Any], wide: bool) -> list[str]:
    spec = obj["spec"]
    ident = spec.get("vni") if spec["type"] == "managed" else spec.get("vlan")
    row = [
        obj["metadata"]["name"],
        spec["type"],
        str(ident if ident is not None else "-"),
        (spec.get("ipv4") or {}).get("network", "-"),
        age(obj["metadata"].get("creationTimestamp")),
    ]
    if wide:
        row += [(spec.get("ipv4") or {}).get("gateway", "-"), str(spec.get("mtu") or "-")]
    return row


def _pool_row(obj: dict[str, Any], wide: bool) -> list[str]:
    spec, status = obj["spec"], obj.get("status") or {}
    nodes = status.get("nodes") or []
    reaching = sum(1 for n in nodes if n.get("reachable"))
    where = spec.get("path") or "{pool}@{mons}".format(
        pool=(spec.get("rbd") or {}).get("pool", "-"),
        mons=",".join((spec.get("rbd") or {}).get("monitors", [])),
    )
    free, capacity = status.get("free"), status.get("capacity")
    from schemas.quantity import approx_bytes

    row = [
        obj["metadata"]["name"],
        spec["type"],
        f"{reaching}/{len(nodes)}",
        approx_bytes(free) if free is not None else "-",
        approx_bytes(capacity) if capacity is not None else "-",
        age(obj["metadata"].get("creationTimestamp")),
    ]
    if wide:
        unreached = [f"{n['node']}: {n.get('message') or '?'}" for n in nodes if not n["reachable"]]
        row += [where, "; ".join(unreached) or "-"]
    return row


def _cluster_row(obj: dict[str, Any], wide: bool) -> list[str]:
    spec, status = obj["spec"], obj.get("status") or {}
    fencing = spec.get("fencing", {})
    row = [
        obj["metadata"]["name"],
        "on" if spec.get("maintenance") else "off",
        status.get("primary") or "-",
        str(status.get("epoch", "-")),
        age(obj["metadata"].get("creationTimestamp")),
    ]
    if wide:
        row += [
            fencing.get("keepaliveInterval", ""),
            str(fencing.get("fenceIntervals", "")),
            str(fencing.get("savingThrows", "")),
        ]
    return row


COLUMNS: dict[str, tuple[list[str], list[str], Callable[[dict[str, Any], bool], list[str]]]] = {
    "VirtualMachine": (
        ["NAME", "PHASE", "NODE", "VCPUS", "MEMORY", "READY", "AGE"],
        ["RUNSTRATEGY", "ALLOWED-NODES", "LAST-NODE", "REASON"],
        _vm_row,
    ),
    "Node": (
        ["NAME", "STATUS", "DAEMON", "ROUTER", "DOMAIN", "VMS", "MEMORY", "AGE"],
        ["COORDINATOR", "VCPUS", "LOAD", "HEARTBEAT", "HYPERVISOR"],
        _node_row,
    ),
    "Network": (["NAME", "TYPE", "VLAN/VNI", "IPV4", "AGE"], ["GATEWAY", "MTU"], _network_row),
    "StoragePool": (
        ["NAME", "TYPE", "REACHED-BY", "FREE", "CAPACITY", "AGE"],
        ["WHERE", "UNREACHABLE"],
        _pool_row,
    ),
    "Cluster": (
        ["NAME", "MAINTENANCE", "PRIMARY", "EPOCH", "AGE"],
        ["KEEPALIVE", "FENCE-INTERVALS", "SAVING-THROWS"],
        _cluster_row,
    ),
}


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
