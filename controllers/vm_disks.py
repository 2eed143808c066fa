"""A node's side of a VM's disks: each new volume (or legacy image) created once, where its
record says (zkstore/disks.py), grown when its size grows, never replaced by a blank one."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from controllers.storage import ensure_secret, volume_store
from hypervisor import DomainDriver, DomainSpec, DomainState, HypervisorError
from hypervisor.storage import (
    DiskSource,
    StorageError,
    VolumeExists,
    VolumeMissing,
    VolumeStore,
)
from schemas import Disk, PoolType, StoragePool, VirtualMachine, VolumeStatus, to_bytes
from zkstore import DiskRecordLost, Disks, NotFound, paths
from zkstore.disks import CREATING, DiskRecord
from zkstore.events import EventLog
from zkstore.secrets import SecretMissing

log = logging.getLogger(__name__)


@dataclass
class Volumes:
    """What a node found of a VM's disks in storage pools."""

    sources: dict[str, DiskSource] = field(default_factory=dict)
    """Where each pool disk is, for the domain's XML."""
    statuses: list[VolumeStatus] = field(default_factory=list)
    reason: str | None = None
    """Why the VM cannot be defined here (status reason), None when it can."""
    problem: str | None = None


def volumes_here(
    disks: Disks,
    driver: DomainDriver,
    events: EventLog,
    node: str,
    vm: VirtualMachine,
    targets: dict[str, str],
) -> Volumes:
    """Each pool disk's volume on ``node``: an existing one found, a new one created (or
    cloned) once, a created one grown to a larger ``size``. A record read after a sync
    decides, never a status or a cache; a volume that should exist and does not leaves the
    VM Pending, never with a blank volume in its place."""
    found = Volumes()
    for disk in vm.spec.disks:
        if disk.pool is None:
            continue
        try:
            pool = disks.store.reveal(disks.store.get(StoragePool, disk.pool))
        except NotFound:
            found.reason, found.problem = "PoolNotFound", f"storage pool {disk.pool} does not exist"
            return found
        except SecretMissing as exc:
            found.reason, found.problem = "PoolSecretMissing", f"disk {disk.name}: {exc}"
            return found
        try:
            problem = _one(disks, driver, events, node, vm, disk, pool, targets, found)
        except (StorageError, HypervisorError) as exc:
            problem = ("VolumeError", f"disk {disk.name} (pool {pool.name}): {exc}")
        if problem is not None:
            found.reason, found.problem = problem
            return found
    return found


def _one(
    disks: Disks,
    driver: DomainDriver,
    events: EventLog,
    node: str,
    vm: VirtualMachine,
    disk: Disk,
    pool: StoragePool,
    targets: dict[str, str],
    found: Volumes,
) -> tuple[str, str] | None:
    backend = volume_store(pool)
    ensure_secret(driver, pool)
    fmt = disk.format or ("raw" if pool.spec.type == PoolType.RBD else "qcow2")
    if disk.volume is not None:  # an existing volume: found, never created or deleted
        if not backend.exists(disk.volume):
            return "VolumeMissing", (
                f"disk {disk.name}: volume {disk.volume} does not exist in pool {pool.name} "
                f"(as node {node} sees it)"
            )
        found.sources[disk.name] = backend.source(disk.volume, disk.format)
        found.statuses.append(
            VolumeStatus(
                disk=disk.name,
                pool=pool.name,
                volume=disk.volume,
                size=backend.size(disk.volume),
                pool_type=pool.spec.type.value,
                created_by=node if pool.spec.type == PoolType.LOCAL else None,
            )
        )
        return None
    volume = backend.volume_name(vm.name, disk.name, fmt)
    wanted = to_bytes(disk.size) if disk.size else None
    mine = DiskRecord(
        vm.name,
        disk.name,
        node,
        f"{pool.name}/{volume}",
        None,
        CREATING,
        pool=pool.name,
        pool_type=pool.spec.type.value,
        volume=volume,
        origin=disk.from_,
        format=fmt,
    )
    # Create-only: the record this node made just now, else the one that was there.
    record = disks.begin(vm.name, disk.name, node, mine.path, None, mine)
    # This node's record, created just now: a volume already there is not its own.
    fresh = record is mine
    if not fresh and record.pool == pool.name and record.format == fmt and record.volume:
        # Named after the VM when it was made: a renamed VM (zkstore/rename.py) keeps it.
        volume = record.volume
    if record.deleting:
        return "VolumeDeleting", (
            f"disk {disk.name}: volume {record.path} of a deleted VM of this name is being "
            "deleted (--delete-volumes); this VM starts once it is gone"
        )
    if record.pool != pool.name or record.volume != volume:
        return "VolumeMismatch", (
            f"disk {disk.name}: its volume is {record.path}, {record.where()}; the spec now "
            f"asks for {pool.name}/{volume}: a volume never moves between pools or formats"
        )
    if record.node != node and (not record.created or record.pool_type == PoolType.LOCAL):
        if record.created:
            return "DiskMissing", (
                f"disk {disk.name}: volume {volume} is in local pool {pool.name} on node "
                f"{record.node}, not on node {node}"
            )
        return "DiskMissing", (
            f"disk {disk.name}: volume {record.path} is being created by node {record.node}, "
            f"not by node {node} (if {record.node} is gone for good, delete "
            f"{disks.store.path(paths.disk_record(vm.name, disk.name))})"
        )
    if record.created:
        if not backend.exists(volume):
            return "DiskMissing", (
                f"disk {disk.name}: volume {volume} does not exist in pool {pool.name} on node "
                f"{node}; it was created by {record.node}: nothing is created in its place"
            )
        size = record.size
        if wanted is not None and (size is None or wanted > size):
            size = _grow(backend, driver, events, vm, disk, volume, wanted, targets)
            disks.finish(vm.name, disk.name, record.node, size=size)
    else:
        # This node's own creating record: a first start, or one stopped half-way.
        made = False
        try:
            if disk.from_ is not None:
                backend.clone(volume, disk.from_, wanted, fmt)
            else:
                assert wanted is not None  # the schema's rule: a size or a clone
                backend.create(volume, wanted, fmt)
            made = True
        except VolumeExists:
            if fresh:
                # Not made for this disk by PVC (an operator's, or a left-over): never taken
                # over, and the record goes, so no later look takes it for an earlier try.
                disks.abandon(vm.name, disk.name, node)
                return "VolumeExists", (
                    f"disk {disk.name}: a volume {volume} is in pool {pool.name} already, not "
                    "created by PVC for this disk: it is not taken over (name it with "
                    "'volume:' to use it, or remove it)"
                )
            # Else whole (created whole or not at all): made by an earlier try of ours.
        except VolumeMissing as exc:
            if fresh:
                disks.abandon(vm.name, disk.name, node)
            return "VolumeMissing", f"disk {disk.name}: {exc}"
        # Made just now at the size asked for: no need to ask the pool (a subprocess).
        size = wanted if made and wanted is not None else backend.size(volume)
        try:
            disks.finish(vm.name, disk.name, node, size=size, fresh=record if fresh else None)
        except DiskRecordLost as exc:
            if made:  # just made, never used: its record went (deleted, or an operator's)
                _drop(backend, volume, vm, disk)
            return "DiskMissing", f"disk {disk.name} ({record.path}): {exc}; looking again"
        origin = f" from {disk.from_}" if disk.from_ else ""
        events.record(
            "VirtualMachine",
            vm.name,
            "VolumeCreated",
            f"volume {volume} ({size} bytes) created{origin} in pool {pool.name} by {node}",
            source=node,
        )
    found.sources[disk.name] = backend.source(volume, fmt)
    found.statuses.append(
        VolumeStatus(
            disk=disk.name,
            pool=pool.name,
            volume=volume,
            size=size,
            origin=record.origin,
            pool_type=pool.spec.type.value,
            created_by=record.node,
        )
    )
    return None


def _drop(backend: VolumeStore, volume: str, vm: VirtualMachine, disk: Disk) -> None:
    try:
        backend.delete(volume)
        log.info("event=volume_dropped vm=%s disk=%s volume=%s", vm.name, disk.name, volume)
    except StorageError as exc:
        log.warning(
            "event=volume_left vm=%s disk=%s volume=%s error=%r", vm.name, disk.name, volume, exc
        )


def _grow(
    backend: VolumeStore,
    driver: DomainDriver,
    events: EventLog,
    vm: VirtualMachine,
    disk: Disk,
    volume: str,
    wanted: int,
    targets: dict[str, str],
) -> int:
    """Grow a volume to ``wanted`` bytes: through the running guest's hypervisor (so the
    guest sees it at once) or, the domain being off, in the pool."""
    running = driver.state(vm.name) not in (DomainState.ABSENT, DomainState.SHUTOFF)
    if not (running and driver.block_resize(vm.name, targets[disk.name], wanted)):
        backend.resize(volume, wanted)
    size = backend.size(volume)
    events.record(
        "VirtualMachine",
        vm.name,
        "VolumeResized",
        f"volume {volume} of disk {disk.name} grown to {size} bytes",
    )
    log.info("event=volume_grown vm=%s disk=%s size=%d", vm.name, disk.name, size)
    return size


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
