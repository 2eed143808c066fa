"""The columns of each kind's table (``pvcctl get`` and the API's ``view=table``), from the
wire form of an object: plain dict work, no pydantic, so that pvcctl's tables load none.

The API builds the rows of a list with these (one small answer instead of every object
whole: a table of 10,000 VMs); pvcctl builds them for a watch and for -L and --sort-by.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any


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


def table(kind: str, items: list[dict[str, Any]], wide: bool) -> tuple[list[str], list[list[str]]]:
    """The headers and rows of ``kind``'s table (``wide``: with the extra columns)."""
    base, extra, row = COLUMNS[kind]
    return base + (extra if wide else []), [row(item, wide) for item in items]


__all__ = ["COLUMNS", "age", "condition", "table"]
