"""A node's writes of VM status: what it reports of the VMs it runs, cached by zxid.

Reads reuse the status this node last wrote while nobody else (another node, the
primary) wrote since, so a steady VM costs one cheap zxid check per reconcile, never
a read of its status.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

from kazoo.exceptions import BadVersionError, NodeExistsError, NoNodeError, RolledBackError

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
from zkstore import Conflict, NotFound, Store, paths
from zkstore.codec import decode, encode

_CAS_RETRIES = 8

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
        # name -> the stored status as this daemon last wrote or read it (None: no status
        # znode), its znode version (-1: none) and the zxid of that write (None: not known).
        # Writes are compare-and-set against that version; an unchanged status is skipped
        # only after one cheap zxid check says nobody else (another node, the primary)
        # wrote since.
        self._last: dict[str, tuple[dict[str, Any] | None, int, int | None]] = {}
        # name -> its volumes as this node's last define found them (status.volumes).
        self._volumes: dict[str, list[VolumeStatus]] = {}

    def forget(self, name: str) -> None:
        self._last.pop(name, None)
        self._volumes.pop(name, None)

    def set_volumes(self, name: str, volumes: list[VolumeStatus]) -> None:
        """Report these volumes in ``name``'s status from the next write on."""
        self._volumes[name] = volumes

    def _path(self, name: str) -> str:
        return self.store.path(paths.status(VirtualMachine.PLURAL, name))

    def prefetch(self, name: str) -> Callable[[], VirtualMachineStatus]:
        """Send the read of ``name``'s status now (the zxid check of the one this daemon
        knows, or the read itself) and return what collects it: so its round trip overlaps
        others' (the claim's)."""
        cached = self._last.get(name)
        client = self.store.client
        if cached is not None and cached[2] is not None:
            check = client.exists_async(self._path(name))

            def checked() -> VirtualMachineStatus:
                stat = check.get()
                if (stat.mzxid if stat is not None else None) == cached[2]:
                    return _parse(cached[0])
                self._last.pop(name, None)
                return self.read(name)

            return checked
        read = client.get_async(self._path(name))
        return lambda: _parse(self._collect(name, read))

    def read(self, name: str) -> VirtualMachineStatus:
        return self.prefetch(name)()

    def _collect(self, name: str, read: Any) -> dict[str, Any] | None:
        try:
            data, stat = read.get()
        except NoNodeError:
            self._last[name] = (None, -1, None)
            return None
        raw = decode(data) if data else {}
        self._last[name] = (raw, int(stat.version), int(stat.mzxid))
        return raw

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

    def write(
        self,
        vm: VirtualMachine,
        placement: Placement,
        phase: VMPhase,
        reason: str,
        message: str,
        *,
        unless_moved: tuple[str, int] | None = None,
        **extra: Any,
    ) -> bool:
        """Write the status (compare-and-set on the version last seen; built again from
        the stored one when another writer got in between). With ``unless_moved`` (an
        absolute znode path and its version: the VM's index entry) only in one transaction
        with a check that the placement is still that one: False, nothing written, when
        it is not (or the VM is gone)."""
        name = vm.name
        path = self._path(name)
        client = self.store.client
        for _ in range(_CAS_RETRIES):
            cached = self._last.get(name)
            fresh = cached is None
            if cached is None:
                self._collect(name, client.get_async(path))
                cached = self._last[name]
            raw, version, zxid = cached
            new = self._build(_parse(raw), vm, placement, phase, reason, message, extra)
            wire = new.wire()
            if wire == raw and unless_moved is None:
                if fresh:
                    return True
                stat = client.exists(path)
                if stat is not None and int(stat.mzxid) == zxid:
                    return True
                self._last.pop(name, None)  # another writer since: build on theirs
                continue
            data = encode(wire)
            try:
                if unless_moved is not None:
                    txn = client.transaction()
                    txn.check(unless_moved[0], version=unless_moved[1])
                    if version < 0:
                        txn.create(path, data)
                    else:
                        txn.set_data(path, data, version=version)
                    check, result = txn.commit()
                    if isinstance(check, Exception) and not isinstance(check, RolledBackError):
                        return False  # placed elsewhere since (or the VM is gone)
                    if isinstance(result, Exception):
                        raise result
                    stored = (wire, version + 1, _zxid_of(result))
                elif version < 0:
                    _, stat = client.create(path, data, include_data=True)
                    stored = (wire, int(stat.version), int(stat.mzxid))
                else:
                    stat = client.set(path, data, version=version)
                    stored = (wire, int(stat.version), int(stat.mzxid))
            except (BadVersionError, NodeExistsError):
                self._last.pop(name, None)  # another writer since: build on theirs
                continue
            except NoNodeError:
                self._last.pop(name, None)
                if version < 0:
                    return False  # the VM is gone
                continue  # its status znode is: create it again
            self._last[name] = stored
            return True
        raise Conflict(f"status of VirtualMachine {name!r} kept changing; gave up")

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


def _parse(raw: dict[str, Any] | None) -> VirtualMachineStatus:
    try:
        return VirtualMachineStatus.model_validate(raw or {})
    except ValueError:
        return VirtualMachineStatus()


def _zxid_of(result: Any) -> int | None:
    """The zxid of a transaction's write: a set_data answers its stat, a create only its
    path (then not known: the next unchanged write reads the status again)."""
    return int(result.mzxid) if hasattr(result, "mzxid") else None


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
