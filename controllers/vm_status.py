"""A node's writes of VM status: what it reports of the VMs it runs, cached by zxid.

Reads reuse the status this node last wrote while nobody else (another node, the
primary) wrote since, so a steady VM costs one cheap zxid check per reconcile, never
a read of its status.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from controllers.domainspec import macs_of
from schemas import (
    Condition,
    MigrationState,
    Placement,
    RunStrategy,
    VirtualMachine,
    VirtualMachineStatus,
    VMPhase,
    VolumeStatus,
    set_condition,
)
from schemas.vm import CONVERGED, RESTART_REQUIRED
from zkstore import NotFound, Store

_WAITED = ("WaitingForSource", "IncomingMigration")
"""Reasons a move's target writes while it waits: the VM did not run there."""


def boot_digests(vm: VirtualMachine) -> dict[str, str]:
    """A digest of each spec field that takes effect only when the domain boots: vcpus,
    memory, disks (but their size: a volume grows under the running guest) and nics.
    runStrategy, placement, migration, shutdownTimeout, autostart and labels apply at once."""
    spec = vm.spec.wire()
    for disk in spec.get("disks", []):
        disk.pop("size", None)
    return {
        field: hashlib.sha256(json.dumps(spec.get(field), sort_keys=True).encode()).hexdigest()[:12]
        for field in ("vcpus", "memory", "disks", "nics")
    }


class StatusWriter:
    def __init__(self, store: Store, node: str) -> None:
        self.store = store
        self.node = node
        # name -> (the status this daemon last wrote, the zxid of that write): reused only
        # while nobody else (another node, the primary) wrote since.
        self._last: dict[str, tuple[dict[str, Any], int]] = {}
        # name -> its volumes as this node's last define found them (status.volumes).
        self._volumes: dict[str, list[VolumeStatus]] = {}

    def forget(self, name: str) -> None:
        self._last.pop(name, None)
        self._volumes.pop(name, None)

    def set_volumes(self, name: str, volumes: list[VolumeStatus]) -> None:
        """Report these volumes in ``name``'s status from the next write on."""
        self._volumes[name] = volumes

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
        """Another node is live-migrating the VM to this one, or failed to and keeps it, and
        reports that: this node, waiting for it, must not write over that (the primary
        places a VM back on its source from that Failed record)."""
        migration = status.migration
        return (
            status.node != self.node
            and migration is not None
            and migration.target == self.node
            and migration.state
            in (MigrationState.WAITING, MigrationState.RUNNING, MigrationState.FAILED)
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
        new = self._build(self.read(name, own), vm, placement, phase, reason, message, extra)
        wire = new.wire()
        if wire == own:
            return
        try:
            zxid = self.store.write_status(VirtualMachine, name, new)
        except NotFound:
            return
        self._last[name] = (wire, zxid)

    def write_waiting(
        self,
        vm: VirtualMachine,
        placement: Placement,
        reason: str,
        message: str,
        **extra: Any,
    ) -> None:
        """Write that this node waits for the VM (a move's target), unless the stored status
        is a live migration's source reporting to this node: decided on the stored status
        itself, compare-and-set, so a report written meanwhile is never lost."""

        def change(raw: Any) -> VirtualMachineStatus | None:
            try:
                stored = VirtualMachineStatus.model_validate(raw or {})
            except ValueError:
                stored = VirtualMachineStatus()
            if self.source_reports(stored):
                return None
            new = self._build(stored, vm, placement, VMPhase.MIGRATING, reason, message, extra)
            return None if new.wire() == (raw or {}) else new

        self._last.pop(vm.name, None)
        try:
            self.store.update_status(VirtualMachine, vm.name, change)
        except NotFound:
            return

    def _build(
        self,
        status: VirtualMachineStatus,
        vm: VirtualMachine,
        placement: Placement,
        phase: VMPhase,
        reason: str,
        message: str,
        extra: dict[str, Any],
    ) -> VirtualMachineStatus:
        # The last node it ran on: not one that only waited for it (a move's target).
        ran_there = status.phase != VMPhase.PENDING and status.reason not in _WAITED
        last_node = (
            status.node
            if status.node and status.node != self.node and ran_there
            else status.last_node
        )
        conditions = set_condition(
            status.conditions, "Scheduled", True, "Scheduled", f"placed on {placement.node}"
        )
        conditions = set_condition(conditions, "Ready", phase == VMPhase.RUNNING, reason, message)
        volumes = self._volumes.get(vm.name, status.volumes)
        local = [v for v in volumes if v.pool_type == "local"]
        if local:
            conditions = set_condition(
                conditions,
                "Movable",
                False,
                "LocalVolume",
                "; ".join(
                    f"disk {v.disk} is volume {v.volume} in local pool {v.pool} on {v.created_by}"
                    for v in local
                )
                + ": flush, migrate and recovery leave it there",
            )
        elif volumes:
            conditions = set_condition(
                conditions,
                "Movable",
                True,
                "SharedVolumes",
                "its volumes are reached by every node reaching their pools",
            )
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
            "volumes": volumes,
            "booted": _booted(status, vm, phase),
        }
        fields.update(extra)
        conditions = _restart_required(conditions, vm, fields["booted"])
        conditions = _converged(conditions, vm, placement, self.node, phase, reason, message)
        return VirtualMachineStatus(
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


def _booted(status: VirtualMachineStatus, vm: VirtualMachine, phase: VMPhase) -> dict[str, str]:
    """What the domain booted with: kept while it is up; a domain found running with none
    recorded (started as this write's phase says, or adopted) runs the spec it was defined
    from; none once it is off."""
    if phase == VMPhase.RUNNING:
        return status.booted or boot_digests(vm)
    if phase in (VMPhase.MIGRATING, VMPhase.STOPPING):
        return status.booted
    return {}


def _converged(
    conditions: list[Condition],
    vm: VirtualMachine,
    placement: Placement,
    node: str,
    phase: VMPhase,
    reason: str,
    message: str,
) -> list[Condition]:
    """Converged: the spec's runStrategy carried out on this node (see schemas.vm.CONVERGED)."""
    if vm.spec.run_strategy == RunStrategy.HALTED:
        done = phase == VMPhase.STOPPED
        why = "Stopped" if done else reason
        said = f"stopped on {node} as runStrategy Halted asks" if done else message
    else:
        done = phase == VMPhase.RUNNING and placement.node == node
        why = "Running" if done else reason
        said = f"running on {node}, where it is placed" if done else message
    return set_condition(conditions, CONVERGED, done, why, said)


def _restart_required(
    conditions: list[Condition], vm: VirtualMachine, booted: dict[str, str]
) -> list[Condition]:
    """RestartRequired: the running domain booted from an older spec (see boot_digests)."""
    if not booted:
        return set_condition(conditions, RESTART_REQUIRED, False, "NotRunning", "")
    wanted = boot_digests(vm)
    changed = sorted(f for f, digest in wanted.items() if booted.get(f) != digest)
    if not changed:
        return set_condition(
            conditions, RESTART_REQUIRED, False, "UpToDate", "it runs as its spec says"
        )
    return set_condition(
        conditions,
        RESTART_REQUIRED,
        True,
        "PendingChanges",
        f"{', '.join(changed)} changed since it started: "
        f"they take effect when it restarts (pvcctl vm restart {vm.name})",
    )
