"""A node's decisions about a VM whose domain runs on it while the VM is placed elsewhere
(controllers/departure.py), against a real ZooKeeper and the fault-injecting hypervisor."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from controllers.departure import Departures
from controllers.vm_status import StatusWriter
from hypervisor import DomainSpec, DomainState, HypervisorWorld, Timings, write_test_host_xml
from schemas import ObjectMeta, Placement, VirtualMachine, VirtualMachineSpec
from zkstore import Holders, Store


@pytest.fixture
def world() -> Iterator[HypervisorWorld]:
    the_world = HypervisorWorld(Timings(start=0.0, shutdown=0.0, destroy=0.0))
    yield the_world
    the_world.close()


def test_a_vm_placed_back_here_between_the_reconciles_reads_is_not_shut_down(
    store: Store, world: HypervisorWorld, tmp_path: Path
) -> None:
    """The target of a live migration lost power; the move failed and the guest ran on
    here. The reconcile read its cache (placed on the dead target) just before the fence's
    recovery placed the VM back here; its next read, fresh, names this node. Found by the
    chaos suite (test_f_target_loses_power_mid_migration), where the guest was then shut
    down: nothing may leave a node the VM is placed on."""
    driver = world.driver("n1", write_test_host_xml(tmp_path / "n1.xml", 4096, 4))
    vm = store.create(
        VirtualMachine(metadata=ObjectMeta(name="back"), spec=VirtualMachineSpec(memory="64Mi"))
    )
    driver.define(DomainSpec(name="back", uuid=str(uuid.uuid4()), vcpus=1, memory_mib=64))
    driver.start("back")
    woken: list[str] = []
    departures = Departures(
        store, driver, "n1", Holders(store), StatusWriter(store, "n1"), woken.append
    )

    store.write_placement("back", Placement(node="n3"), epoch=None)  # n3: gone
    delay, move = departures.leave(vm, None, DomainState.RUNNING)
    assert delay is not None, "a move to a node that does not exist shut the guest down"
    assert move is not None and move.failed, move

    store.write_placement("back", Placement(node="n1"), epoch=None)  # the recovery
    delay, move = departures.leave(vm, move, DomainState.RUNNING)
    assert delay is not None, "placed here, yet told to shut the guest down"
    assert world.domain_state("n1", "back") == DomainState.RUNNING
