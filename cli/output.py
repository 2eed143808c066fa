"""Render objects as kubectl does: table, wide, yaml, json or name."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import yaml
from rich.console import Console
from rich.table import Table

from schemas import approx_bytes, format_bytes

Row = Callable[[dict[str, Any]], list[str]]
FORMATS = ("table", "wide", "yaml", "json", "name")


def console() -> Console:
    # Off a terminal, never wrap or cut columns: scripts parse this output.
    return Console(width=None if sys.stdout.isatty() else 10_000, highlight=False)


def age(timestamp: str | None) -> str:
    if not timestamp:
        return "-"
    try:
        then = datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    except ValueError:
        return "-"
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
    return format_bytes(value) if value else "0"


def _vm_row(obj: dict[str, Any], wide: bool) -> list[str]:
    spec, status = obj["spec"], obj.get("status") or {}
    ready = condition(obj, "Ready")
    row = [
        obj["metadata"]["name"],
        status.get("phase", "Pending"),
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


def render(kind: str, items: list[dict[str, Any]], fmt: str, out: Console) -> None:
    # Machine output is the data, byte for byte: written straight to the file, never through
    # rich, whose emoji codes would turn a MAC's ":ab:" into an emoji.
    if fmt == "json":
        doc: Any = (
            items[0]
            if len(items) == 1
            else {"apiVersion": "pvc/v1", "kind": "List", "items": items}
        )
        _write(out, json.dumps(doc, indent=2) + "\n")
        return
    if fmt == "yaml":
        _write(out, yaml.safe_dump_all(items, sort_keys=False) if items else "")
        return
    if fmt == "name":
        _write(out, "".join(f"{kind.lower()}/{item['metadata']['name']}\n" for item in items))
        return
    base, extra, row = COLUMNS[kind]
    wide = fmt == "wide"
    headers = base + (extra if wide else [])
    out.file.write(plain_table(headers, [row(item, wide) for item in items]))
    out.file.flush()


def _write(out: Console, text: str) -> None:
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


def describe(obj: dict[str, Any], out: Console) -> None:
    meta = obj["metadata"]
    out.print(f"[bold]Name:[/bold]        {meta['name']}")
    out.print(f"[bold]Kind:[/bold]        {obj['kind']}")
    for key in ("labels", "annotations"):
        values = meta.get(key) or {}
        text = ", ".join(f"{k}={v}" for k, v in values.items()) or "<none>"
        out.print(f"[bold]{key.capitalize() + ':':<12}[/bold] {text}", markup=True)
    out.print(f"[bold]Created:[/bold]     {meta.get('creationTimestamp', '-')}")
    out.print(
        f"[bold]Generation:[/bold]  {meta.get('generation', '-')}   "
        f"resourceVersion: {meta.get('resourceVersion', '-')}"
    )
    out.print("[bold]Spec:[/bold]")
    out.print(_indent(yaml.safe_dump(obj.get("spec", {}), sort_keys=False)), markup=False)
    status = dict(obj.get("status") or {})
    conditions = status.pop("conditions", [])
    out.print("[bold]Status:[/bold]")
    out.print(
        _indent(yaml.safe_dump(status, sort_keys=False) if status else "<none>\n"), markup=False
    )
    out.print("[bold]Conditions:[/bold]")
    if not conditions:
        out.print("  <none>")
        return
    table = Table(box=None, show_edge=False, header_style="bold")
    for header in ("TYPE", "STATUS", "REASON", "MESSAGE", "LAST-TRANSITION"):
        table.add_column(header)
    for cond in conditions:
        table.add_row(
            cond.get("type", ""),
            cond.get("status", ""),
            cond.get("reason", ""),
            cond.get("message", ""),
            cond.get("lastTransitionTime", ""),
        )
    out.print(table)


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.rstrip("\n").splitlines())


def render_events(items: list[dict[str, Any]], out: Console, indent: bool = False) -> None:
    table = Table(box=None, show_edge=False, pad_edge=indent, header_style="bold")
    for header in ("AGE", "TYPE", "REASON", "OBJECT", "MESSAGE"):
        table.add_column(header, no_wrap=header != "MESSAGE")
    for event in items:
        involved = event.get("involvedObject") or {}
        table.add_row(
            age(event.get("timestamp")),
            event.get("type", ""),
            event.get("reason", ""),
            f"{str(involved.get('kind', '')).lower()}/{involved.get('name', '')}",
            event.get("message", ""),
        )
    out.print(table)


def watch_row(kind: str, event_type: str, obj: dict[str, Any], fmt: str) -> str:
    """One line per watch event: the table row with the event type in front, or the object."""
    if fmt == "json":
        return json.dumps({"type": event_type, "object": obj}, separators=(",", ":"))
    if fmt == "yaml":
        return "---\n" + yaml.safe_dump({"type": event_type, "object": obj}, sort_keys=False)
    if fmt == "name":
        return f"{event_type} {kind.lower()}/{obj['metadata']['name']}"
    _, _, row = COLUMNS[kind]
    return "   ".join([event_type, *row(obj, fmt == "wide")])
