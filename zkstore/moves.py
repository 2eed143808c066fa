"""Checks before a VM moves, read from the store: can the target reach its disks, can the
two nodes live-migrate it. The API answers a user's migrate with them (409), and the
source node checks again before each live-migration attempt."""

from __future__ import annotations

from schemas import DaemonState, Node, NodeStatus, VirtualMachine
from zkstore.disks import Disks
from zkstore.errors import NotFound
from zkstore.store import Store
from zkstore.volumes import unreached


def unreached_disks(store: Store, vm: VirtualMachine, node: str) -> str | None:
    """Why ``node`` cannot reach ``vm``'s volumes (its pools, a local volume on another node,
    a legacy image made elsewhere) or has not its networks ready; None when it has all (or
    does not exist: the caller says so)."""
    if not vm.spec.disks and not vm.spec.nics:
        return None
    try:
        status = store.get(Node, node).status
    except NotFound:
        return None
    records = Disks(store).of(vm.name).values() if any(d.creates for d in vm.spec.disks) else ()
    reasons = unreached(vm, records, node, status) if vm.spec.disks else []
    if reasons:
        return f"node {node} does not reach " + ", ".join(reasons)
    networks = unready_networks(vm, status)
    if networks:
        return f"node {node}: " + "; ".join(networks)
    return None


def unready_networks(vm: VirtualMachine, status: NodeStatus | None) -> list[str]:
    """Why a node with ``status`` cannot take ``vm``'s NICs: each of its networks that is not
    ready there (Node.status.networks, written by the node's network agent)."""
    have = {n.name: n for n in status.networks} if status is not None else {}
    problems = []
    for name in sorted({nic.network for nic in vm.spec.nics}):
        entry = have.get(name)
        if entry is None:
            problems.append(f"network {name} not built yet")
        elif not entry.ready:
            problems.append(f"network {name} not ready ({entry.message})")
    return problems


def node_live_problem(store: Store, node: str, *, target: bool) -> tuple[str | None, bool]:
    """Why ``node`` cannot take part in a live migration now, and whether that is about live
    migration itself (its hypervisor cannot) rather than the node being unavailable."""
    try:
        status = store.get(Node, node).status
    except NotFound:
        return f"node {node} does not exist", False
    return node_status_live_problem(node, status, target=target)


def node_status_live_problem(
    node: str, status: NodeStatus | None, *, target: bool
) -> tuple[str | None, bool]:
    """``node_live_problem`` from a status already read (one read for several looks)."""
    if target:
        ready = status is not None and any(
            c.type == "Ready" and c.status == "True" for c in status.conditions
        )
        if status is None or status.daemon_state != DaemonState.RUN or not ready:
            return f"node {node} is not ready", False
    if status is not None and status.live_migration_problem is not None:
        return f"node {node} cannot live-migrate: {status.live_migration_problem}", True
    if target and (status is None or status.migration_uri is None):
        return f"node {node} publishes no migration URI", True
    return None, False


def live_migration_problem(
    store: Store, vm: VirtualMachine, source: str | None, target: str
) -> str | None:
    """Why ``vm`` cannot be live-migrated from ``source`` to ``target`` now; None when it can."""
    if source is None:
        return "it is placed on no node, so it runs nowhere to migrate from"
    status = vm.status
    if status is None or status.node != source or status.phase.value not in ("Running",):
        phase = status.phase.value if status else "Pending"
        return f"it is not running on {source} (phase {phase})"
    for node, is_target in ((source, False), (target, True)):
        problem, _ = node_live_problem(store, node, target=is_target)
        if problem is not None:
            return problem
    return unreached_disks(store, vm, target)
