"""A node's side of a VM's disks: each new image created once, where its record says."""

from __future__ import annotations

from hypervisor import DomainDriver, DomainSpec
from schemas import VirtualMachine
from zkstore import DiskRecordLost, Disks, paths


def disks_here(
    disks: Disks,
    driver: DomainDriver,
    node: str,
    shared: str | None,
    vm: VirtualMachine,
    spec: DomainSpec,
) -> str | None:
    """Create each new disk's image once, as its record in ZooKeeper says (zkstore/disks.py):
    None when every image is here on ``node``, else why the VM cannot be defined there.
    ``shared`` is the node's disk folder when it is declared shared.

    A blank image never replaces one created before: a record read after a sync decides,
    never a status or a cache."""
    for disk, wanted in zip(vm.spec.disks, spec.disks, strict=True):
        if wanted.size_bytes is None:
            continue  # an operator's image (source): PVC neither creates nor tracks it
        record = disks.read(vm.name, disk.name) or disks.begin(
            vm.name, disk.name, node, wanted.path, shared
        )
        if not record.created and record.node != node:
            return (
                f"disk {disk.name} ({record.path}) is being created on node {record.node}, "
                f"not on node {node} (if {record.node} is gone for good, delete "
                f"{disks.store.path(paths.disk_record(vm.name, disk.name))})"
            )
        if record.path != wanted.path or (record.created and not driver.disk_exists(wanted.path)):
            return (
                f"disk {disk.name} ({record.path}) does not exist on node {node}; "
                f"it was {record.where()}"
            )
        if record.created:
            continue
        # This node's own creating record: a first start, or one that stopped half-way.
        driver.create_disk(wanted)
        try:
            disks.finish(vm.name, disk.name, node)
        except DiskRecordLost as exc:
            return f"disk {disk.name} ({record.path}): {exc}; looking again"
    return None
