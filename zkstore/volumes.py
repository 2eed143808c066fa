"""Which nodes reach a VM's volumes: the scheduler places a VM only there, and a move goes
only there (docs/storage.md). Read from each node's own report of its pools
(``Node.status.storage``) and from the create-once records (zkstore/disks.py)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from schemas import NodePool, NodeStatus, VirtualMachine
from zkstore.disks import DiskRecord


def pool_on(status: NodeStatus | None, pool: str) -> NodePool | None:
    """``pool`` as the node with ``status`` last reported it; None when it did not."""
    if status is None:
        return None
    return next((p for p in status.storage if p.pool == pool), None)


@dataclass(frozen=True)
class Binding:
    """A volume in a local pool that binds its VM to the node holding it."""

    disk: str
    volume: str
    pool: str
    node: str


def bound_to(
    vm: VirtualMachine, records: Iterable[DiskRecord], local_pools: set[str]
) -> Binding | None:
    """What binds ``vm`` to one node: a volume PVC made in a local pool (its record names
    the node), or an existing volume of a local pool (the VM is pinned to the node that
    holds it: admission wants ``placement.nodes`` of one node)."""
    for record in records:
        if record.pool_type == "local" and not record.deleting and record.volume:
            return Binding(record.disk, record.volume, str(record.pool), record.node)
    pinned = vm.spec.placement.nodes
    for disk in vm.spec.disks:
        if disk.volume and disk.pool in local_pools and len(pinned) == 1:
            return Binding(disk.name, disk.volume, disk.pool, pinned[0])
    return None


def unreached(
    vm: VirtualMachine, records: Iterable[DiskRecord], node: str, status: NodeStatus | None
) -> list[str]:
    """What of ``vm``'s disks ``node`` does not reach (empty: it reaches them all): every pool
    its disks name, each local volume made so far (only on its node), and legacy images."""
    reasons: list[str] = []
    for pool in sorted({d.pool for d in vm.spec.disks if d.pool is not None}):
        seen = pool_on(status, pool)
        if seen is None:
            reasons.append(f"pool {pool} (not reported by the node)")
        elif not seen.reachable:
            reasons.append(f"pool {pool} ({seen.message or 'unreachable'})")
        elif seen.type == "local" and vm.spec.placement.nodes[:1] not in ([], [node]):
            # An existing volume of a local pool is on the one node the VM is pinned to.
            named = [d for d in vm.spec.disks if d.pool == pool and d.volume]
            if named:
                reasons.append(
                    f"disk {named[0].name} (volume {named[0].volume} in local pool {pool} "
                    f"on {vm.spec.placement.nodes[0]})"
                )
    created = {d.name for d in vm.spec.disks if d.creates}
    for record in records:
        if record.disk not in created:
            continue
        if record.pool is not None:
            if record.pool_type == "local" and record.node != node:
                reasons.append(f"disk {record.disk} (volume {record.volume} {record.where()})")
        elif not record.reached_by(
            node, status.disk_dir if status else None, bool(status and status.shared_disk_dir)
        ):
            reasons.append(f"disk {record.disk} ({record.path}, {record.where()})")
    return reasons
