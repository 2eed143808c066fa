"""The VM conditions that tell its story: Converged (its spec carried out) and RestartRequired
(a change that waits for a reboot), as a node's status writes build them, and the schema's
rule that keeps Converged honest when other writers (the primary) change the phase."""

from __future__ import annotations

from typing import Any

from controllers.vm_status import StatusWriter, boot_digests
from schemas import (
    Placement,
    VirtualMachine,
    VirtualMachineStatus,
    VMPhase,
    get_condition,
    parse_resource,
    set_condition,
)
from schemas.vm import CONVERGED, RESTART_REQUIRED


def vm(generation: int = 1, **spec: Any) -> VirtualMachine:
    obj = parse_resource(
        {
            "apiVersion": "pvc/v1",
            "kind": "VirtualMachine",
            "metadata": {"name": "web", "generation": generation},
            "spec": {"memory": "1Gi", **spec},
        }
    )
    assert isinstance(obj, VirtualMachine)
    return obj


def build(
    machine: VirtualMachine,
    phase: VMPhase,
    *,
    before: VirtualMachineStatus | None = None,
    placed_on: str = "n1",
    reason: str = "Running",
) -> VirtualMachineStatus:
    writer = StatusWriter(store=None, node="n1")  # type: ignore[arg-type]  # _build reads nothing
    return writer._build(
        before or VirtualMachineStatus(),
        machine,
        Placement(node=placed_on, epoch=1),
        phase,
        reason,
        "message",
        {},
    )


def condition(status: VirtualMachineStatus, kind: str) -> tuple[str, str]:
    found = get_condition(status.conditions, kind)
    assert found is not None, kind
    return found.status.value, found.reason


def test_running_where_placed_is_converged() -> None:
    status = build(vm(), VMPhase.RUNNING)
    assert condition(status, CONVERGED) == ("True", "Running")
    assert status.observed_generation == 1


def test_running_while_placed_elsewhere_is_not_converged() -> None:
    # A failed live migration keeps the VM running on its source, placed on the target.
    status = build(vm(), VMPhase.RUNNING, placed_on="n2", reason="MigrationFailed")
    assert condition(status, CONVERGED) == ("False", "MigrationFailed")


def test_moving_starting_stopping_are_not_converged() -> None:
    for phase in (VMPhase.MIGRATING, VMPhase.STARTING, VMPhase.STOPPING, VMPhase.FAILED):
        assert condition(build(vm(), phase, reason="X"), CONVERGED)[0] == "False", phase


def test_halted_is_converged_once_stopped() -> None:
    halted = vm(runStrategy="Halted")
    assert condition(build(halted, VMPhase.STOPPING, reason="ShuttingDown"), CONVERGED) == (
        "False",
        "ShuttingDown",
    )
    assert condition(build(halted, VMPhase.STOPPED, reason="Halted"), CONVERGED) == (
        "True",
        "Stopped",
    )


def test_stopped_after_guest_shutdown_is_not_converged_unless_halted() -> None:
    rerun = vm(runStrategy="RerunOnFailure")
    status = build(rerun, VMPhase.STOPPED, reason="GuestShutdown")
    assert condition(status, CONVERGED) == ("False", "GuestShutdown")


def test_the_primary_marking_a_vm_unknown_ends_converged() -> None:
    status = build(vm(), VMPhase.RUNNING)
    status.phase = VMPhase.UNKNOWN  # as fencing does, knowing nothing of Converged
    status.reason = "NodeDead"
    assert condition(status, CONVERGED) == ("False", "Unknown")
    stored = VirtualMachineStatus.model_validate(
        {**build(vm(), VMPhase.RUNNING).wire(), "phase": "Pending", "reason": "Unschedulable"}
    )
    assert condition(stored, CONVERGED) == ("False", "Pending")


def test_a_halted_vm_placed_nowhere_is_converged() -> None:
    # What the primary's scheduler writes for a Halted VM (it places none).
    conditions = set_condition([], "Ready", False, "Halted", "runStrategy is Halted")
    status = VirtualMachineStatus(
        observed_generation=3, conditions=conditions, phase=VMPhase.STOPPED, reason="Halted"
    )
    assert condition(status, CONVERGED) == ("True", "Stopped")


def test_a_change_that_needs_a_reboot_is_told_until_it_boots_with_it() -> None:
    old = vm(1, vcpus=1)
    running = build(old, VMPhase.RUNNING)
    assert running.booted == boot_digests(old)
    assert condition(running, RESTART_REQUIRED) == ("False", "UpToDate")

    bigger = vm(2, vcpus=2, memory="2Gi")
    pending = build(bigger, VMPhase.RUNNING, before=running)
    assert condition(pending, RESTART_REQUIRED) == ("True", "PendingChanges")
    found = get_condition(pending.conditions, RESTART_REQUIRED)
    assert found is not None and found.message.startswith("memory, vcpus changed")
    # Still converged: it runs where it is placed; the change waits for a reboot.
    assert condition(pending, CONVERGED) == ("True", "Running")

    stopping = build(bigger, VMPhase.STOPPING, before=pending, reason="Restarting")
    assert condition(stopping, RESTART_REQUIRED)[0] == "True"
    starting = build(bigger, VMPhase.STARTING, before=stopping, reason="Starting")
    rebooted = build(bigger, VMPhase.RUNNING, before=starting)
    assert condition(rebooted, RESTART_REQUIRED) == ("False", "UpToDate")
    assert rebooted.booted == boot_digests(bigger)


def test_changes_that_apply_at_once_need_no_restart() -> None:
    base = vm(1, disks=[{"name": "root", "pool": "p", "size": "1Gi"}])
    running = build(base, VMPhase.RUNNING)
    changed = vm(
        2,
        disks=[{"name": "root", "pool": "p", "size": "2Gi"}],  # grown under the guest
        runStrategy="RerunOnFailure",
        shutdownTimeout="10s",
        placement={"home": "n1"},
        migration={"method": "live"},
    )
    assert condition(build(changed, VMPhase.RUNNING, before=running), RESTART_REQUIRED) == (
        "False",
        "UpToDate",
    )


def test_a_stopped_vm_needs_no_restart() -> None:
    status = build(vm(), VMPhase.STOPPED, reason="Halted")
    assert status.booted == {}
    assert condition(status, RESTART_REQUIRED) == ("False", "NotRunning")
