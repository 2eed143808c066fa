"""A node's writes of VM status: what it reports of the VMs it runs, cached by zxid.

Reads reuse the status this node last wrote while nobody else (another node, the
primary) wrote since, so a steady VM costs one cheap zxid check per reconcile, never
a read of its status.
"""

from __future__ import annotations

from typing import Any

from controllers.domainspec import macs_of
from schemas import (
    MigrationState,
    Placement,
    VirtualMachine,
    VirtualMachineStatus,
    VMPhase,
    set_condition,
)
from zkstore import NotFound, Store


class StatusWriter:
    def __init__(self, store: Store, node: str) -> None:
        self.store = store
        self.node = node
        # name -> (the status this daemon last wrote, the zxid of that write): reused only
        # while nobody else (another node, the primary) wrote since.
        self._last: dict[str, tuple[dict[str, Any], int]] = {}

    def forget(self, name: str) -> None:
        self._last.pop(name, None)

    def read(self, name: str, own: dict[str, Any] | None = None) -> VirtualMachineStatus:
        raw = own if own is not None else self._own(name)
        if raw is None:
            raw = self.store.read_status(VirtualMachine, name) or {}
        try:
            return VirtualMachineStatus.model_validate(raw)
        except ValueError:
            return VirtualMachineStatus()

    def was_running_here(self, status: VirtualMachineStatus) -> bool:
        return status.node == self.node and status.phase in (VMPhase.RUNNING, VMPhase.STARTING)

    def source_reports(self, status: VirtualMachineStatus) -> bool:
        """Another node is live-migrating the VM to this one and reports it meanwhile: this
        node, waiting for it, must not write over that."""
        migration = status.migration
        return (
            status.phase == VMPhase.MIGRATING
            and status.node != self.node
            and migration is not None
            and migration.target == self.node
            and migration.state in (MigrationState.WAITING, MigrationState.RUNNING)
        )

    def _own(self, name: str) -> dict[str, Any] | None:
        """The status as this daemon last wrote it, if it is still the stored one."""
        cached = self._last.get(name)
        if cached is None:
            return None
        if self.store.status_zxid(VirtualMachine, name) != cached[1]:
            del self._last[name]  # another writer since: read theirs
            return None
        return cached[0]

    def write(
        self,
        vm: VirtualMachine,
        placement: Placement,
        phase: VMPhase,
        reason: str,
        message: str,
        **extra: Any,
    ) -> None:
        name = vm.name
        own = self._own(name)
        status = self.read(name, own)
        last_node = status.node if status.node and status.node != self.node else status.last_node
        conditions = set_condition(
            status.conditions, "Scheduled", True, "Scheduled", f"placed on {placement.node}"
        )
        conditions = set_condition(conditions, "Ready", phase == VMPhase.RUNNING, reason, message)
        # A live migration that failed here stays told until the next move.
        failed = status.migration
        if failed is not None and not (
            failed.state == MigrationState.FAILED and failed.source == self.node
        ):
            failed = None
        fields: dict[str, Any] = {
            "failures": status.failures,
            "restart_handled": status.restart_handled,
            "force_stop_handled": status.force_stop_handled,
            "migration": failed,
        }
        fields.update(extra)
        new = VirtualMachineStatus(
            observed_generation=vm.metadata.generation,
            conditions=conditions,
            phase=phase,
            node=self.node,
            last_node=last_node,
            epoch=placement.epoch,
            reason=reason,
            domain_uuid=vm.metadata.uid,
            macs=macs_of(vm),
            **fields,
        )
        wire = new.wire()
        if wire == own:
            return
        try:
            zxid = self.store.write_status(VirtualMachine, name, new)
        except NotFound:
            return
        self._last[name] = (wire, zxid)
