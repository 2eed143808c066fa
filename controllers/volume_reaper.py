"""The volume reaper: deletes the volumes of VMs deleted with ``--delete-volumes``.

The API marks the VM's records ``deleting`` and lists the VM under ``/volume-deletions``
in the very transaction that deletes the VM (zkstore/disks.py), so no node uses or creates
those volumes from then on. A volume goes only once no node holds the VM (its domain is
gone everywhere: the holder set of docs/ha.md) and no VM of that name exists again; then
its record goes, and the VM's mark once none is left.

Who deletes: the primary for ``shared`` and ``rbd`` pools (the same storage from every
node), the node that holds a ``local`` volume for its own. Each pass is bounded (each
pool operation has a timeout), failures back off, and every deletion is logged and told
as an event. A volume others are clones of is kept (``VolumeInUse``) until they are gone.
"""

from __future__ import annotations

import logging
import threading

from kazoo.recipe.watchers import ChildrenWatch

from controllers.storage import volume_store
from hypervisor.storage import StorageError, VolumeInUse
from schemas import PoolType, StoragePool, VirtualMachine
from zkstore import Disks, Holders, NotFound, Store, paths
from zkstore.disks import DiskRecord
from zkstore.events import EventLog
from zkstore.secrets import SecretMissing

log = logging.getLogger(__name__)

INTERVAL = 30.0
"""Seconds between passes when nothing wakes the reaper (a retry of what failed)."""


class VolumeReaper:
    def __init__(self, store: Store, node: str, *, primary: bool) -> None:
        """``primary``: reap shared and rbd volumes; else this node's local volumes."""
        self.store = store
        self.node = node
        self.primary = primary
        self.disks = Disks(store)
        self.holders = Holders(store)
        self.events = EventLog(store)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._watch: ChildrenWatch | None = None

    def start(self) -> None:
        self._watch = ChildrenWatch(
            self.store.client, self.store.path(paths.VOLUME_DELETIONS), self._on_children
        )
        self._thread = threading.Thread(
            target=self._run, name=f"volume-reaper@{self.node}", daemon=True
        )
        self._thread.start()

    def _on_children(self, _children: list[str]) -> bool:
        self._wake.set()
        return not self._stop.is_set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _run(self) -> None:
        backoff = INTERVAL
        while not self._stop.is_set():
            self._wake.clear()
            try:
                left = self.reap()
                backoff = INTERVAL
            except Exception:
                log.exception(
                    "event=volume_reaper_failed node=%s retry_in=%.0fs", self.node, backoff
                )
                left = True
                backoff = min(backoff * 2, 300.0)
            self._wake.wait(backoff if left else INTERVAL * 4)

    def _mine(self, record: DiskRecord) -> bool:
        if record.pool_type == PoolType.LOCAL:
            return record.node == self.node
        return self.primary

    def reap(self) -> bool:
        """One pass over every VM whose volumes are to go; True when some of this reaper's
        are left (to try again later)."""
        left = False
        for vm in self.disks.deletions():
            if not self.store.connected or self._stop.is_set():
                return True
            if self.store.exists(VirtualMachine, vm) or self.holders.read(vm):
                left = True  # its domain is not gone everywhere yet (or a VM is back)
                continue
            records = [r for r in self.disks.of(vm).values() if r.deleting]
            for record in records:
                if self._mine(record) and not self._delete(record):
                    left = True
            if not any(r.deleting for r in self.disks.of(vm).values()):
                self.disks.deletion_done(vm)
                log.info("event=volumes_deleted vm=%s", vm)
        return left

    def _delete(self, record: DiskRecord) -> bool:
        assert record.pool is not None and record.volume is not None
        try:
            pool = self.store.reveal(self.store.get(StoragePool, record.pool))
        except NotFound:
            log.warning(
                "event=volume_kept vm=%s volume=%s reason=pool_gone pool=%s",
                record.vm,
                record.volume,
                record.pool,
            )
            return False
        except SecretMissing as exc:
            log.warning(
                "event=volume_kept vm=%s volume=%s reason=pool_secret_missing error=%s",
                record.vm,
                record.volume,
                exc,
            )
            return False
        try:
            users = [
                vm.name
                for vm in self.store.list(VirtualMachine)
                if any(d.pool == record.pool and d.volume == record.volume for d in vm.spec.disks)
            ]
            if users:  # named by another VM with 'volume:' (admission refuses that now)
                raise VolumeInUse(f"volume {record.volume} is VM {users[0]}'s disk")
            volume_store(pool).delete(record.volume)
        except VolumeInUse as exc:
            self.events.record(
                "VirtualMachine",
                record.vm,
                "VolumeKept",
                str(exc),
                type_="Warning",
                source=self.node,
            )
            log.warning(
                "event=volume_kept vm=%s volume=%s reason=%r", record.vm, record.volume, str(exc)
            )
            return False
        except StorageError as exc:
            log.warning(
                "event=volume_delete_failed vm=%s volume=%s pool=%s error=%r",
                record.vm,
                record.volume,
                record.pool,
                str(exc),
            )
            return False
        self.disks.remove(record)
        self.events.record(
            "VirtualMachine",
            record.vm,
            "VolumeDeleted",
            f"volume {record.volume} of disk {record.disk} deleted from pool {record.pool}",
            source=self.node,
        )
        log.info(
            "event=volume_deleted vm=%s disk=%s pool=%s volume=%s",
            record.vm,
            record.disk,
            record.pool,
            record.volume,
        )
        return True
