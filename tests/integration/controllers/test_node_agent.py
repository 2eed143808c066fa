"""The node agent's heartbeat against a real ZooKeeper and libvirt's test driver: what it
reports of the hypervisor, and that a node whose hypervisor runs no guests gets no VMs."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from controllers.node_agent import START_REPORT_DELAY, START_REPORT_INTERVAL, NodeAgent
from controllers.scheduler import Scheduler
from hypervisor import LibvirtDriver, libvirt_driver, write_test_host_xml
from schemas import (
    Node,
    NodeStatus,
    VirtualMachine,
    get_condition,
)
from tests.helpers import apply_vm, holds_for, wait_for
from zkstore import Store

GIB_MIB = 1024

AgentFactory = Callable[[str, int], NodeAgent]


@pytest.fixture
def start_agent(store: Store, tmp_path: Path) -> Iterator[AgentFactory]:
    """Register a node with a test-driver host of ``memory_mib`` and heartbeat once."""
    agents: list[NodeAgent] = []

    def start(name: str, memory_mib: int) -> NodeAgent:
        uri = write_test_host_xml(tmp_path / f"{name}.xml", memory_mib, 4)
        agent = NodeAgent(
            store,
            LibvirtDriver(uri),
            name,
            coordinator=False,
            hypervisor_uri=uri,
            allocations=lambda: (0, 0, 0, 0),
            lease_wait=5.0,
        )
        agent.register()
        agents.append(agent)
        agent.start()
        agent.beat()
        return agent

    yield start
    for agent in agents:
        agent.stop()
        agent.driver.close()


def add_vm(store: Store, name: str, **spec: Any) -> None:
    apply_vm(store, name, "1Gi", **spec)


def node_status(store: Store, name: str) -> NodeStatus:
    status = store.get(Node, name).status
    assert status is not None
    return status


def test_heartbeat_reports_the_domain_type(store: Store, start_agent: AgentFactory) -> None:
    start_agent("n1", 8 * GIB_MIB)
    status = node_status(store, "n1")
    assert status.domain_type == "test"
    ready = get_condition(status.conditions, "Ready")
    assert ready is not None
    assert (ready.status, ready.reason) == ("True", "HeartbeatOK")


def test_a_node_whose_hypervisor_runs_no_guests_is_not_ready_and_gets_no_vms(
    store: Store, start_agent: AgentFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    start_agent("n2", 4 * GIB_MIB)
    # n1's type is chosen from its capabilities, like a QEMU host's: they offer only
    # "test" domains, neither kvm nor qemu.
    monkeypatch.setattr(libvirt_driver, "default_domain_type", lambda _uri: None)
    agent = start_agent("n1", 64 * GIB_MIB)

    status = node_status(store, "n1")
    assert status.domain_type is None
    ready = get_condition(status.conditions, "Ready")
    assert ready is not None
    assert (ready.status, ready.reason) == ("False", "NoGuestSupport")
    assert ready.message == (
        f"pvcnoded run, but {agent.hypervisor_uri} can run no guests: "
        "libvirt offers no kvm guests for i686, nor qemu (TCG) guests"
    )

    scheduler = Scheduler(store, store.bump_epoch("test"))
    scheduler.start()
    try:
        # n1 has far more memory, so the mem policy would choose it, were it Ready.
        add_vm(store, "a")
        placement = wait_for(lambda: store.read_placement("a"), 10, "a placed")
        assert placement is not None and placement.node == "n2"
        # A VM only n1 may run stays unplaced, saying why.
        add_vm(store, "b", placement={"nodes": ["n1"]})
        vm_status = wait_for(lambda: store.get(VirtualMachine, "b").status, 10, "b's status")
        assert vm_status is not None
        assert (vm_status.phase, vm_status.reason) == ("Pending", "Unschedulable")
        scheduled = get_condition(vm_status.conditions, "Scheduled")
        assert scheduled is not None
        assert scheduled.message == "n1: not ready; n2: not in placement.nodes"
        assert store.read_placement("b") is None
    finally:
        scheduler.stop()


def test_a_burst_of_starts_shares_one_heartbeat_and_a_stop_is_reported_at_once(
    start_agent: AgentFactory,
) -> None:
    agent = start_agent("hv1", 4 * GIB_MIB)
    beats: list[float] = []
    real_beat = agent.beat

    def counted() -> None:
        beats.append(time.monotonic())
        real_beat()

    agent.beat = counted  # type: ignore[method-assign]
    assert agent.keepalive >= 2.0  # so a beat within a second is a poke's, not the interval's
    started = time.monotonic()
    for _ in range(20):
        agent.poke_soon()
    wait_for(lambda: beats, 2.0, "a heartbeat after the starts")
    # The first starts after a quiet spell: reported within START_REPORT_DELAY (the agent
    # had just beaten as it registered; that does not hold them back).
    assert beats[0] - started < START_REPORT_DELAY + 0.5
    # The window in which 19 more pokes' beats would have come: the elapsed time is the test.
    holds_for(lambda: len(beats) == 1, 0.5, "one heartbeat for one burst of 20 starts")
    # Starts going on right after a report of starts: the next report of them waits out
    # START_REPORT_INTERVAL from it.
    reported = beats[0]
    agent.poke_soon()
    wait_for(lambda: len(beats) == 2, START_REPORT_INTERVAL + 1.0, "the next report of starts")
    assert beats[1] - reported >= START_REPORT_INTERVAL - 0.1
    count = len(beats)
    stopped = time.monotonic()
    agent.poke()
    wait_for(lambda: len(beats) > count, 2.0, "a heartbeat after the stop")
    assert beats[count] - stopped < START_REPORT_DELAY
