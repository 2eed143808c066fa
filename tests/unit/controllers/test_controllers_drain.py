"""When the drain controller counts a move as over (it decides how many more may start)."""

from __future__ import annotations

import pytest

from controllers.drain import DrainController, _Move
from schemas import (
    ObjectMeta,
    Placement,
    RunStrategy,
    VirtualMachine,
    VirtualMachineSpec,
    VirtualMachineStatus,
    VMPhase,
)


def move(
    phase: VMPhase | None,
    status_node: str | None,
    placed: str | None,
    run: RunStrategy = RunStrategy.ALWAYS,
) -> _Move:
    vm = VirtualMachine(
        metadata=ObjectMeta(name="v"),
        spec=VirtualMachineSpec(memory="64Mi", run_strategy=run),
        status=VirtualMachineStatus(phase=phase, node=status_node) if phase else None,
    )
    return _Move(vm, Placement(node=placed, reason="flush", migration="src"))


@pytest.mark.parametrize(
    ("case", "settled"),
    [
        (move(None, None, "dst"), False),
        (move(VMPhase.RUNNING, "src", "dst"), False),  # still on the source
        (move(VMPhase.MIGRATING, "dst", "dst"), False),  # waiting for the source
        (move(VMPhase.STARTING, "dst", "dst"), False),
        (move(VMPhase.RUNNING, "dst", "dst"), True),
        (move(VMPhase.FAILED, "dst", "dst"), True),  # the move is over; the VM's trouble is its own
        (move(VMPhase.STOPPED, "src", "dst"), True),  # a guest that shut itself down
        (move(VMPhase.STOPPED, "src", None, RunStrategy.HALTED), True),
        (move(VMPhase.STOPPING, "src", None, RunStrategy.HALTED), False),
    ],
)
def test_a_move_is_over_when_the_vm_runs_where_placed_or_is_stopped(
    case: _Move, settled: bool
) -> None:
    assert DrainController._settled(case) is settled


def test_a_past_move_is_left_unparsed_only_when_its_records_say_it_is_over() -> None:
    from controllers.drain import _settled_elsewhere

    placed = {"node": "b", "reason": "unflush", "migration": None}
    running = {"phase": "Running", "node": "b"}
    spec = {"metadata": {"name": "v"}, "spec": {"memory": "64Mi"}}
    # Settled, and no node in a drain is its end: no step acts on it or waits for it.
    assert _settled_elsewhere(placed, spec, running, draining={"c"})
    assert _settled_elsewhere({**placed, "migration": "a"}, spec, running, draining={"c"})
    # Anything else is read whole, as _settled decides.
    assert not _settled_elsewhere(placed, spec, running, draining={"b"})
    assert not _settled_elsewhere({**placed, "migration": "c"}, spec, running, {"c"})
    assert not _settled_elsewhere(placed, spec, {"phase": "Running", "node": "a"}, set())
    assert not _settled_elsewhere(placed, spec, {"phase": "Starting", "node": "b"}, set())
    assert not _settled_elsewhere(placed, spec, None, set())
    assert not _settled_elsewhere({**placed, "node": None}, spec, running, set())
    halted = {**spec, "spec": {"memory": "64Mi", "runStrategy": "Halted"}}
    assert not _settled_elsewhere(placed, halted, running, set())
    going = {**spec, "metadata": {"name": "v", "deletionTimestamp": "2026-01-01T00:00:00Z"}}
    assert not _settled_elsewhere(placed, going, running, set())
