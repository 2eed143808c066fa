"""Deleting objects the Kubernetes way: a delete of an object with finalizers only sets its
``metadata.deletionTimestamp`` (Terminating); whoever owns a finalizer does its part and
removes it; the object goes, in one transaction, when the last one does.

Every VM carries ``pvc.io/domain`` (schemas/verbs.py): the node that holds its domain
shuts it down (ACPI, then forced off at shutdownTimeout) and undefines it first
(controllers/vm_controller.py); the primary's scheduler removes it from a VM that no node
holds (controllers/scheduler.py). A VM placed on no node and held by none goes at once
here: nothing can be running, and the delete's transaction checks it is still unplaced.
``force`` deletes at once whatever the finalizers (the node then destroys a domain it no
longer sees placed). ``deleteVolumes`` marks the VM's volumes in the transaction that
removes the object, so they go only once the domain is gone (controllers/volume_reaper.py).

The removal itself (the object with its status, placement and node-index entry) is the
primary's or a daemon's: pvcapid may not touch those znodes (zkstore/acl.py), so its
``Deletions`` gets a ``remover`` that asks the primary (zkstore/requests.py), which runs
``remove_now`` with a check on its epoch. Marking an object Terminating writes its spec
only, and stays the API's.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

from kazoo.client import TransactionRequest

from schemas import Resource, VirtualMachine, utcnow, verbs
from zkstore import paths
from zkstore.disks import Disks
from zkstore.errors import AlreadyPlaced, Conflict, NotFound
from zkstore.events import EventLog
from zkstore.holders import Holders
from zkstore.store import Store

log = logging.getLogger(__name__)

_RETRIES = 8


class Remover(Protocol):
    """Removes an object at once with its status, placement and node-index entry (and,
    with ``delete_volumes``, marks its volumes); ``unplaced_only``: only while the VM is
    placed on no node (AlreadyPlaced otherwise)."""

    def __call__(
        self,
        cls: type[Resource],
        name: str,
        resource_version: str | None,
        delete_volumes: bool,
        *,
        unplaced_only: bool = False,
    ) -> None: ...


class Deletions:
    """Asks for, and completes, the deletion of objects (one per Store user)."""

    def __init__(
        self,
        store: Store,
        events: EventLog | None = None,
        source: str = "",
        *,
        remover: Remover | None = None,
    ) -> None:
        """``remover``: who removes an object at once (pvcapid's asks the primary);
        by default this store's identity, with no epoch check (a node's daemon)."""
        self.store = store
        self.events = events or EventLog(store)
        self.source = source
        self.disks = Disks(store)
        self.holders = Holders(store)
        # Who removes an object at once: the primary (through the API's request) or this
        # store user itself.
        self._remove: Remover = remover or self.remove_now

    def request(
        self,
        cls: type[Resource],
        name: str,
        *,
        resource_version: str | None = None,
        delete_volumes: bool = False,
        force: bool = False,
        dry_run: bool = False,
    ) -> tuple[Resource, bool]:
        """Delete ``name`` (at once when it has no finalizers, it is a VM nothing holds, or
        ``force``), else mark it Terminating. Returns the object (as marked, or as it was
        before it went) and whether it is gone."""
        obj = self.store.get(cls, name)
        if resource_version and resource_version != obj.metadata.resource_version:
            raise Conflict(f"{cls.KIND} {name!r} was modified: resourceVersion is stale")
        at_once = force or not obj.metadata.finalizers
        if dry_run:
            if at_once or obj.deleting:
                return obj, at_once
            marked = obj.model_copy(deep=True)
            marked.metadata.deletion_timestamp = utcnow()
            return marked, False
        if at_once:
            self._remove(cls, name, resource_version, delete_volumes or _asked_volumes(obj))
            self._told_deleted(cls, name, "deleted" + (" (forced)" if force else ""))
            return obj, True
        if cls is VirtualMachine and not obj.deleting and self._unheld(name):
            try:
                self._remove(cls, name, resource_version, delete_volumes, unplaced_only=True)
            except AlreadyPlaced:
                pass  # placed meanwhile: its node shuts it down first, as below
            else:
                self._told_deleted(cls, name, "deleted (it ran nowhere)")
                return obj, True
        stamped = (verbs.DELETE_VOLUMES,) if delete_volumes else ()
        marked = self.store.mark_deleting(cls, name, resource_version, stamped)
        if not obj.deleting:
            self.events.record(
                cls.KIND,
                name,
                "Terminating",
                _terminating_message(marked),
                source=self.source,
            )
        return marked, False

    def finalize(self, cls: type[Resource], name: str, finalizer: str) -> bool:
        """Remove ``finalizer`` (its owner's part is done); the object goes when it was the
        last one on an object being deleted. True once the object is gone."""
        for _ in range(_RETRIES):
            try:
                obj = self.store.get(cls, name)
            except NotFound:
                return True
            remaining = [f for f in obj.metadata.finalizers if f != finalizer]
            try:
                if obj.deleting and not remaining:
                    self._remove(cls, name, obj.metadata.resource_version, _asked_volumes(obj))
                    self._told_deleted(cls, name, f"deleted: {finalizer} done")
                    return True
                if remaining != obj.metadata.finalizers:
                    obj.metadata.finalizers = remaining
                    self.store.update(obj)
                    log.info(
                        "event=finalizer_removed kind=%s name=%s finalizer=%s",
                        cls.KIND,
                        name,
                        finalizer,
                    )
                return False
            except NotFound:
                return True
            except Conflict:
                continue  # changed since the read: look again
        raise Conflict(f"{cls.KIND} {name!r} kept changing; gave up removing {finalizer}")

    def complete(self, cls: type[Resource], name: str) -> bool:
        """Remove an object being deleted whose finalizers are all gone (a user removed the
        last one); True when it is gone."""
        try:
            obj = self.store.get(cls, name)
        except NotFound:
            return True
        if not obj.deleting or obj.metadata.finalizers:
            return False
        try:
            self._remove(cls, name, obj.metadata.resource_version, _asked_volumes(obj))
        except NotFound:
            return True
        except Conflict:
            return False  # changed since: whoever changed it looks again
        self._told_deleted(cls, name, "deleted: no finalizers left")
        return True

    def _unheld(self, vm: str) -> bool:
        placement = self.store.read_placement(vm)
        return (placement is None or not placement.node) and not self.holders.read(vm)

    def remove_now(
        self,
        cls: type[Resource],
        name: str,
        resource_version: str | None,
        delete_volumes: bool,
        *,
        unplaced_only: bool = False,
        epoch: int | None = None,
    ) -> None:
        """Remove the object with its status, placement and index entry in one transaction
        (the primary's with ``epoch``: only while the cluster epoch is still that)."""
        volume_ops: Callable[[TransactionRequest], None] | None = None
        if delete_volumes and cls is VirtualMachine:
            volume_ops = self.disks.deletion_ops(name, sorted(self.disks.of(name)))
        epoch_path = self.store.path(paths.EPOCH)

        def also(txn: TransactionRequest) -> None:
            if epoch is not None:
                txn.check(epoch_path, version=epoch)
            if volume_ops is not None:
                volume_ops(txn)

        self.store.delete(cls, name, resource_version, also=also, unplaced_only=unplaced_only)
        log.info("event=deleted kind=%s name=%s", cls.KIND, name)
        if delete_volumes and self.disks.deletion_pending(name):
            self.events.record(
                cls.KIND,
                name,
                "VolumesDeleting",
                "its volumes in storage pools are deleted once its domain is gone",
                source=self.source,
            )

    def _told_deleted(self, cls: type[Resource], name: str, message: str) -> None:
        self.events.record(cls.KIND, name, "Deleted", message, source=self.source)


def _asked_volumes(obj: Resource) -> bool:
    """This deletion was asked with deleteVolumes: the annotation carries this very
    deletionTimestamp (one copied from elsewhere, e.g. a backup, never matches)."""
    asked = obj.metadata.annotations.get(verbs.DELETE_VOLUMES)
    return obj.deleting and asked == obj.metadata.deletion_timestamp


def _terminating_message(obj: Resource) -> str:
    if isinstance(obj, VirtualMachine):
        return (
            "deletion requested: its domain is shut down (forced off after "
            f"{obj.spec.shutdown_timeout}) and undefined before the object goes"
        )
    return f"deletion requested: waiting for finalizers {', '.join(obj.metadata.finalizers)}"


__all__ = ["Deletions", "Remover"]
