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
