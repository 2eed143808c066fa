"""Which nodes reach a VM's volumes: the scheduler places a VM only there, and a move goes
only there (docs/storage.md). Read from each node's own report of its pools
(``Node.status.storage``) and from the create-once records (zkstore/disks.py)."""

from __future__ import annotations

from collections.abc import Iterable

from schemas import NodePool, NodeStatus, VirtualMachine
from zkstore.disks import DiskRecord


def pool_on(status: NodeStatus | None, pool: str) -> NodePool | None:
    """``pool`` as the node with ``status`` last reported it; None when it did not."""
    if status is None:
        return None
    return next((p for p in status.storage if p.pool == pool), None)


def bound_to(records: Iterable[DiskRecord]) -> DiskRecord | None:
    """A volume in a local pool binds its VM to the node that holds it: that record."""
    return next((r for r in records if r.pool_type == "local" and not r.deleting), None)


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
