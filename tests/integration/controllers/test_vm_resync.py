"""A node's periodic resync, in process against a real ZooKeeper on the fault-injecting
hypervisor: a crash whose lifecycle event was lost is found and acted on by the next pass,
and an idle node's passes leave its settled VMs alone (issue 16)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from controllers import metrics
from controllers.vm_controller import VMController
from hypervisor import HypervisorWorld
from schemas import Placement, VirtualMachine, VirtualMachineStatus
from tests.helpers import apply_vm, holds_for, wait_for
from zkstore import Store
from zkstore.events import EventLog

PERIOD = 0.5


def place_vm(store: Store, name: str) -> None:
    apply_vm(store, name)
    store.write_placement(name, Placement(node="n1"), epoch=None)


def phase(store: Store, vm: str) -> str | None:
    return VirtualMachineStatus.model_validate(store.read_status(VirtualMachine, vm) or {}).phase


def reasons(store: Store, vm: str) -> list[str]:
    return [e.reason for e in EventLog(store).list("VirtualMachine", vm)]


def reconciles() -> float:
    sample = metrics.REGISTRY.get_sample_value(
        "pvc_node_reconcile_duration_seconds_count", {"controller": "vm@n1"}
    )
    return sample or 0.0


@pytest.fixture
def node(vm_node: Callable[..., VMController]) -> VMController:
    # Only the compare passes, in this test's time.
    return vm_node(resync_period=PERIOD, full_resync_every=1000)


def after_first_pass(node: VMController) -> None:
    """Wait for two resync passes from now: the second lists every domain as it is."""
    plan = node.resync_plan
    seen = plan.passes
    wait_for(lambda: plan.passes >= seen + 2, 10 * PERIOD, "two resync passes")
    wait_for(lambda: node.controller.queue_depth() == 0, 10, "the queue empty")


def test_a_crash_whose_event_was_lost_is_found_by_the_next_pass(
    store: Store, world: HypervisorWorld, node: VMController
) -> None:
    for name in ("web", "db"):
        place_vm(store, name)
    for name in ("web", "db"):
        wait_for(lambda n=name: phase(store, n) == "Running", 20, f"{name} Running")
    after_first_pass(node)  # the first pass reconciles every VM: not what is tested

    world.drop_events("n1")
    world.crash("n1", "web")
    wait_for(lambda: "Crashed" in reasons(store, "web"), 10 * PERIOD + 5, "the crash found")
    wait_for(lambda: reasons(store, "web").count("Started") == 2, 20, "web started again")
    assert world.domain_state("n1", "web") is not None
    assert reasons(store, "db").count("Started") == 1  # untouched


def test_passes_over_settled_vms_reconcile_nothing(
    store: Store, world: HypervisorWorld, node: VMController
) -> None:
    for i in range(5):
        place_vm(store, f"vm{i}")
    for i in range(5):
        wait_for(lambda n=f"vm{i}": phase(store, n) == "Running", 20, f"vm{i} Running")
    after_first_pass(node)
    plan = node.resync_plan
    before, passes = reconciles(), plan.passes
    holds_for(lambda: reconciles() == before, 6 * PERIOD, "no reconcile of a settled VM")
    assert plan.passes >= passes + 4  # the passes did run
