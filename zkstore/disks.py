"""Create-once records of VM disk images: ``/disks/<vm>/<disk>`` (docs/ha.md, "Disks").

An image is created once, when its VM first starts, by the first node that defines
the VM: it creates the record, a create-only znode, so exactly one node ever wins,
with ``state: creating``; then it creates the image; then it sets ``state: created``.
No node creates an image for a record another node created, and no node creates one
for a ``created`` record at all: a node that does not find that image at the record's
path leaves the VM Pending (``DiskMissing``) rather than put a blank disk in its place.
These decisions rest on the record read after a sync, never on status or a cache.

A node that dies half-way leaves ``creating``, and that is safe:

- The same node, when it defines the VM again, creates the image again. Nothing has
  used it (a VM is defined only once all its records say ``created``), so no data can
  be lost; and the driver writes an image under a temporary name and renames it into
  place, so a file at the path is always a whole image, which it leaves alone.
- Any other node waits (Pending, naming the creator): it cannot tell a slow creator
  from a dead one, and it may not reach the creator's folder at all.
- An operator who knows the creator is gone for good deletes the record; the next node
  to start the VM creates the image. Delete only a ``creating`` record: without a
  ``created`` record a node that lacks the image would create a blank one.

Which nodes reach a disk: its creator, and, when the creator's ``diskDir`` is declared
shared (``libvirt.sharedDiskDir``), every node that declares the same folder shared.

Records outlive their VM, as its images do (PVC never deletes an image): a VM created
again under the same name gets its old images back, on a node that reaches them.
Removing the records while the images stay would let such a VM get a blank disk on one
node and its old image on another, two different disks under one name. To start
afresh, delete the images and then ``/disks/<vm>``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from kazoo.client import TransactionRequest
from kazoo.exceptions import BadVersionError, NodeExistsError, NoNodeError, NotEmptyError

from zkstore import paths
from zkstore.codec import decode, encode
from zkstore.errors import StoreError
from zkstore.store import Store

log = logging.getLogger(__name__)

CREATING = "creating"
CREATED = "created"
DELETING = "deleting"
"""Its VM was deleted with ``--delete-volumes``: the volume goes, then the record (the
volume reaper, controllers/volume_reaper.py); no node uses or creates it meanwhile."""

_RETRIES = 8


class DiskRecordLost(StoreError):
    """The record this node was creating the image for is gone or is not its own any more
    (an operator removed it): the image just made must not be marked created."""


@dataclass(frozen=True)
class DiskRecord:
    vm: str
    disk: str
    node: str
    """The node that created (or is creating) the image."""
    path: str
    """The image's path on that node."""
    shared: str | None
    """The creator's diskDir when it is declared shared (every node declaring the same
    folder shared reaches the image); None when only ``node`` reaches it."""
    state: str
    """``creating``, ``created`` or ``deleting``."""
    pool: str | None = None
    """The StoragePool of the volume; None for an image in a node's ``diskDir`` (legacy)."""
    pool_type: str | None = None
    """``shared``, ``rbd`` or ``local``: a local pool's volume is reached by ``node`` only."""
    volume: str | None = None
    """The volume's name in the pool."""
    size: int | None = None
    """Bytes, as last created or grown (growing ``size`` grows it; it never shrinks)."""
    origin: str | None = None
    """The volume it was cloned from."""
    format: str | None = None
    """``qcow2`` or ``raw`` (pool volumes)."""

    @property
    def created(self) -> bool:
        return self.state == CREATED

    @property
    def deleting(self) -> bool:
        return self.state == DELETING

    def reached_by(self, node: str, disk_dir: str | None, shared: bool) -> bool:
        """Whether ``node``, with its ``disk_dir`` (shared or not), reaches this image
        (legacy records; pool records: see zkstore/volumes.py)."""
        return node == self.node or (shared and self.shared is not None and disk_dir == self.shared)

    def where(self) -> str:
        """Where the image lives, for messages."""
        if self.pool is not None:
            if self.pool_type == "local":
                return f"in local pool {self.pool} on {self.node}"
            return f"in pool {self.pool}"
        if self.shared is not None:
            return f"created on {self.node} in the shared folder {self.shared}"
        return f"created on {self.node}, in its own folder"

    def with_state(self, state: str, **changes: Any) -> DiskRecord:
        return replace(self, state=state, **changes)

    def wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "node": self.node,
            "path": self.path,
            "shared": self.shared,
            "state": self.state,
        }
        for key in ("pool", "pool_type", "volume", "size", "origin", "format"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return out

    @classmethod
    def from_wire(cls, vm: str, disk: str, raw: dict[str, Any]) -> DiskRecord:
        return cls(
            vm=vm,
            disk=disk,
            node=str(raw["node"]),
            path=str(raw["path"]),
            shared=raw.get("shared"),
            state=str(raw.get("state", CREATING)),
            pool=raw.get("pool"),
            pool_type=raw.get("pool_type"),
            volume=raw.get("volume"),
            size=raw.get("size"),
            origin=raw.get("origin"),
            format=raw.get("format"),
        )


class Disks:
    """The disk records of all VMs, over one Store (a kazoo-style recipe)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.client = store.client

    def read(self, vm: str, disk: str) -> DiskRecord | None:
        """One record as of now on the leader (after a sync)."""
        path = self.store.path(paths.disk_record(vm, disk))
        self.client.sync(path)
        try:
            data, _stat = self.client.get(path)
        except NoNodeError:
            return None
        return DiskRecord.from_wire(vm, disk, decode(data))

    def of(self, vm: str) -> dict[str, DiskRecord]:
        """Every record of ``vm``'s disks, by disk name (after a sync)."""
        root = self.store.path(paths.vm_disks(vm))
        self.client.sync(root)
        try:
            names = self.client.get_children(root)
        except NoNodeError:
            return {}
        reads = [(disk, self.client.get_async(f"{root}/{disk}")) for disk in names]
        records = {}
        for disk, read in reads:
            with contextlib.suppress(NoNodeError):
                records[disk] = DiskRecord.from_wire(vm, disk, decode(read.get()[0]))
        return records

    def begin(
        self,
        vm: str,
        disk: str,
        node: str,
        path: str,
        shared: str | None,
        mine: DiskRecord | None = None,
    ) -> DiskRecord:
        """Claim the creation of ``vm``'s ``disk`` for ``node``: the record as stored now, this
        node's new ``creating`` record (``mine`` when given) when it won, else the one that
        was there."""
        znode = self.store.path(paths.disk_record(vm, disk))
        mine = mine or DiskRecord(vm, disk, node, path, shared, CREATING)
        for _ in range(_RETRIES):
            try:
                self.client.create(znode, encode(mine.wire()), makepath=True)
            except NodeExistsError:
                existing = self.read(vm, disk)
                if existing is not None:
                    return existing
                continue  # removed in between (by an operator): try again
            log.info(
                "event=disk_record_created vm=%s disk=%s node=%s path=%s", vm, disk, node, path
            )
            return mine
        raise RuntimeError(f"creating the record of disk {disk!r} of {vm!r} kept racing; gave up")

    def finish(
        self,
        vm: str,
        disk: str,
        node: str,
        size: int | None = None,
        fresh: DiskRecord | None = None,
    ) -> DiskRecord:
        """``node`` created the image of its ``creating`` record (or grew a created one to
        ``size``): mark it ``created``. ``fresh``: the record as ``begin`` created it, when it
        did just now (then it is still at version 0 unless someone changed it since)."""
        znode = self.store.path(paths.disk_record(vm, disk))
        if fresh is not None and fresh.node == node and fresh.state == CREATING:
            # The record this node created just now (version 0): one compare-and-set, no read.
            done = fresh.with_state(CREATED, size=size if size is not None else fresh.size)
            with contextlib.suppress(BadVersionError, NoNodeError):
                self.client.set(znode, encode(done.wire()), version=0)
                log.info(
                    "event=disk_created vm=%s disk=%s node=%s path=%s", vm, disk, node, done.path
                )
                return done
        for _ in range(_RETRIES):
            self.client.sync(znode)
            try:
                data, stat = self.client.get(znode)
            except NoNodeError:
                raise DiskRecordLost(f"the record of disk {disk!r} of {vm!r} was removed") from None
            record = DiskRecord.from_wire(vm, disk, decode(data))
            if record.node != node:
                raise DiskRecordLost(
                    f"the record of disk {disk!r} of {vm!r} is {record.node}'s now, not {node}'s"
                )
            if record.deleting:
                raise DiskRecordLost(f"the volume of disk {disk!r} of {vm!r} is being deleted")
            if record.created and (size is None or record.size == size):
                return record
            done = record.with_state(CREATED, size=size if size is not None else record.size)
            try:
                self.client.set(znode, encode(done.wire()), version=stat.version)
            except (BadVersionError, NoNodeError):
                continue  # changed in between: look again
            log.info(
                "event=disk_created vm=%s disk=%s node=%s path=%s", vm, disk, node, record.path
            )
            return done
        raise RuntimeError(f"marking disk {disk!r} of {vm!r} created kept racing; gave up")

    def abandon(self, vm: str, disk: str, node: str) -> None:
        """Remove ``node``'s own ``creating`` record of ``vm``'s ``disk`` (nothing was made
        for it), so a later look starts afresh."""
        znode = self.store.path(paths.disk_record(vm, disk))
        with contextlib.suppress(NoNodeError, BadVersionError):
            data, stat = self.client.get(znode)
            record = DiskRecord.from_wire(vm, disk, decode(data))
            if record.node == node and record.state == CREATING:
                self.client.delete(znode, version=stat.version)

    def deletion_ops(self, vm: str, disks: list[str]) -> Callable[[TransactionRequest], None]:
        """Operations, for the transaction that deletes ``vm``, that mark its records of
        ``disks`` ``deleting`` (compare-and-set) and list it for the volume reaper. Images
        in a node's ``diskDir`` (legacy) are never deleted."""

        def add(txn: TransactionRequest) -> None:
            marked = 0
            for disk in disks:
                znode = self.store.path(paths.disk_record(vm, disk))
                try:
                    data, stat = self.client.get(znode)
                except NoNodeError:
                    continue
                record = DiskRecord.from_wire(vm, disk, decode(data))
                if record.pool is None or record.deleting:
                    continue
                txn.set_data(znode, encode(record.with_state(DELETING).wire()), stat.version)
                marked += 1
            deletion = self.store.path(paths.volume_deletion(vm))
            if marked and not self.client.exists(deletion):
                txn.create(deletion, b"")

        return add

    def deletions(self) -> list[str]:
        """VMs whose volumes are to be deleted (after a sync)."""
        root = self.store.path(paths.VOLUME_DELETIONS)
        self.client.sync(root)
        try:
            return sorted(self.client.get_children(root))
        except NoNodeError:
            return []

    def deletion_pending(self, vm: str) -> bool:
        return self.client.exists(self.store.path(paths.volume_deletion(vm))) is not None

    def deletion_done(self, vm: str) -> None:
        """The reaper deleted every volume of ``vm`` marked ``deleting``: drop the mark."""
        with contextlib.suppress(NoNodeError):
            self.client.delete(self.store.path(paths.volume_deletion(vm)))

    def remove(self, record: DiskRecord) -> None:
        """Drop a ``deleting`` record whose volume is gone (and ``/disks/<vm>`` when empty)."""
        znode = self.store.path(paths.disk_record(record.vm, record.disk))
        with contextlib.suppress(NoNodeError):
            data, stat = self.client.get(znode)
            if DiskRecord.from_wire(record.vm, record.disk, decode(data)).deleting:
                self.client.delete(znode, version=stat.version)
        with contextlib.suppress(NoNodeError, NotEmptyError):
            self.client.delete(self.store.path(paths.vm_disks(record.vm)))
