"""The primary's part in deleting VMs (zkstore/deletion.py), run by its scheduler.

The scheduler sees every VM, so it is the one that:

- adds ``pvc.io/domain`` to a VM that lacks it and is not being deleted: VMs created
  before finalizers existed (the store puts it on every new VM), or one a user stripped
  of it. Any writer could; the scheduler lists every VM when a primary starts, so no VM
  runs long without it, and its write is one compare-and-set that bumps no generation.
- removes ``pvc.io/domain`` from a VM being deleted that no node holds. A node adds itself
  to a VM's holders before it defines the domain and removes itself only once the domain
  is gone; the primary removes a dead node from them only after its power-off was
  confirmed (the fence). So "no holders", read after a sync, means no domain exists
  anywhere, and the object may go. A VM placed on a live node is left to that node (it
  shuts the domain down gracefully first). A VM whose dead node is not fenced stays
  Terminating, however long: that node may still run the guest, and the one-copy rule
  needs the object (and its volumes) until it is fenced.
"""

from __future__ import annotations

import contextlib
import logging
import threading

from schemas import (
    GONE_STATES,
    Node,
    NodeStatus,
    VirtualMachine,
    VirtualMachineStatus,
    VMPhase,
    set_condition,
)
from schemas.verbs import DOMAIN_FINALIZER
from zkstore import Holders, NotFound, ResourceInformer, Store
from zkstore.deletion import Deletions
from zkstore.errors import Terminating

log = logging.getLogger(__name__)

MAX_WAIT = 30.0
"""Seconds between looks, at most, at a deleted VM that a dead node may still hold."""


class DeletingVMs:
    def __init__(self, store: Store, vms: ResourceInformer[VirtualMachine]) -> None:
        self.store = store
        self.vms = vms
        self.deletions = Deletions(store, source="primary")
        self.holders = Holders(store)
        self._lock = threading.Lock()
        self._waits: dict[str, int] = {}
        """Deleted VMs waiting for a dead node to be fenced -> looks in a row (back-off)."""

    def waiting(self, name: str) -> bool:
        with self._lock:
            return name in self._waits

    def waiting_names(self) -> list[str]:
        """The deleted VMs waiting for a dead node's fence."""
        with self._lock:
            return list(self._waits)

    def add_finalizer(self, name: str) -> None:
        def change(vm: VirtualMachine) -> None:
            if not vm.deleting and DOMAIN_FINALIZER not in vm.metadata.finalizers:
                vm.metadata.finalizers = [*vm.metadata.finalizers, DOMAIN_FINALIZER]

        with contextlib.suppress(NotFound, Terminating):
            self.store.mutate_spec(VirtualMachine, name, change)
            log.info("event=finalizer_added vm=%s finalizer=%s", name, DOMAIN_FINALIZER)

    def reconcile(self, vm: VirtualMachine) -> float | None:
        """A VM being deleted: let it go once no node holds it; the requeue delay while a
        dead, unfenced node may."""
        name = vm.name
        if not vm.metadata.finalizers:
            self.deletions.complete(VirtualMachine, name)  # a user removed the last one
            return self._done(name)
        if DOMAIN_FINALIZER not in vm.metadata.finalizers:
            return self._done(name)  # others' finalizers: theirs to remove
        placement = self.store.read_placement(name)
        node = placement.node if placement is not None else None
        if node is not None and self._live(node):
            return self._done(name)  # its node shuts the domain down, then lets it go
        holders = self.holders.read(name)
        if holders:
            return self._wait(vm, sorted(holders))
        log.info("event=deletion_finalized vm=%s by=primary node=%s", name, node or "-")
        self.deletions.finalize(VirtualMachine, name, DOMAIN_FINALIZER)
        return self._done(name)

    def _live(self, node: str) -> bool:
        raw = self.store.read_status(Node, node)
        return raw is not None and NodeStatus.model_validate(raw).daemon_state not in GONE_STATES

    def _done(self, name: str) -> float | None:
        """Nothing more to do for ``name`` here (no requeue)."""
        with self._lock:
            self._waits.pop(name, None)
        return None

    def _wait(self, vm: VirtualMachine, holders: list[str]) -> float:
        with self._lock:
            looks = self._waits[vm.name] = self._waits.get(vm.name, 0) + 1
        delay = min(2.0 ** min(looks - 1, 5), MAX_WAIT)
        down = [h for h in holders if not self._live(h)]
        reason = "WaitingForFence" if down else "Deleting"
        message = f"waiting for {', '.join(holders)} to let go of its domain" + (
            f" ({', '.join(down)} down: only a fence lets it go)" if down else ""
        )
        if looks == 1 or delay >= MAX_WAIT:
            log.warning(
                "event=deletion_waiting vm=%s holders=%s looks=%d retry_in=%.0fs",
                vm.name,
                ",".join(holders),
                looks,
                delay,
            )
        old = vm.status or VirtualMachineStatus()
        if old.phase != VMPhase.TERMINATING or old.reason != reason:
            status = old.model_copy(
                update={
                    "phase": VMPhase.TERMINATING,
                    "reason": reason,
                    "conditions": set_condition(old.conditions, "Ready", False, reason, message),
                }
            )
            with contextlib.suppress(NotFound):
                self.store.write_status(VirtualMachine, vm.name, status)
        return delay
