"""FaultyDriver and HypervisorWorld over libvirt's real test driver: durations, faults, and
the one-copy record taken from what the simulated hosts hold."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hypervisor import (
    DomainSpec,
    DomainState,
    FaultyDriver,
    HypervisorUnavailable,
    HypervisorWorld,
    NicSpec,
    OperationFailed,
    StopReason,
    Timings,
    write_test_host_xml,
)
from hypervisor.fence import FenceAgent, PowerState
from tests.helpers import holds_for, wait_for

TIMINGS = Timings(start=0.3, shutdown=0.2, destroy=0.2)


def make_spec(name: str = "vm1") -> DomainSpec:
    return DomainSpec(
        name=name,
        uuid=str(uuid.uuid5(uuid.NAMESPACE_DNS, f"{name}.pvc.invalid")),
        vcpus=1,
        memory_mib=128,
        nics=(NicSpec(mac="52:54:00:00:00:01", bridge="vmbr0"),),
        owner_tag="test-cluster",
    )


@pytest.fixture
def world() -> Iterator[HypervisorWorld]:
    the_world = HypervisorWorld(TIMINGS)
    yield the_world
    the_world.close()


@pytest.fixture
def node_driver(world: HypervisorWorld, tmp_path: Path) -> Callable[[str], FaultyDriver]:
    def make(node: str) -> FaultyDriver:
        return world.driver(node, write_test_host_xml(tmp_path / f"{node}.xml", 4096, 2))

    return make


@pytest.fixture
def n1(node_driver: Callable[[str], FaultyDriver]) -> FaultyDriver:
    driver = node_driver("n1")
    driver.define(make_spec())
    return driver


class Background:
    """Run one call in a thread; keep what it returned or raised."""

    def __init__(self, call: Callable[[], None]) -> None:
        self.error: BaseException | None = None
        self.ended: float | None = None
        self._thread = threading.Thread(target=self._run, args=(call,), daemon=True)
        self._thread.start()

    def _run(self, call: Callable[[], None]) -> None:
        try:
            call()
        except BaseException as err:
            self.error = err
        self.ended = time.monotonic()

    def join(self) -> Background:
        self._thread.join(timeout=5)
        assert not self._thread.is_alive()
        return self


def start_running(driver: FaultyDriver, name: str = "vm1") -> None:
    driver.start(name)
    assert driver.state(name) is DomainState.RUNNING


def test_a_start_takes_its_time_and_holds_the_domain_paused_meanwhile(
    world: HypervisorWorld, n1: FaultyDriver
) -> None:
    begun = time.monotonic()
    start = Background(lambda: n1.start("vm1"))
    wait_for(lambda: world.holders("vm1") == {"n1"}, timeout=1, what="held from the call")
    assert n1.state("vm1") is DomainState.PAUSED
    assert world.held_by("n1") == {"vm1"}
    assert start.ended is None

    assert start.join().error is None
    assert time.monotonic() - begun >= TIMINGS.start
    assert n1.state("vm1") is DomainState.RUNNING
    assert [info.state for info in n1.list_managed()] == [DomainState.RUNNING]
    assert [t.state for t in world.transitions if t.vm == "vm1"] == [
        "defined",
        "starting",
        "running",
    ]
    # Starting what runs is a no-op, at once.
    begun = time.monotonic()
    n1.start("vm1")
    assert time.monotonic() - begun < TIMINGS.start


def test_a_second_node_starting_a_held_vm_is_one_violation_naming_both(
    world: HypervisorWorld,
    n1: FaultyDriver,
    node_driver: Callable[[str], FaultyDriver],
    caplog: pytest.LogCaptureFixture,
) -> None:
    n2 = node_driver("n2")
    n2.define(make_spec())
    first = Background(lambda: n1.start("vm1"))
    wait_for(lambda: world.holders("vm1") == {"n1"}, timeout=1, what="n1 holds vm1")
    n2.start("vm1")
    assert first.join().error is None

    assert world.holders("vm1") == {"n1", "n2"}
    [violation] = world.violations
    assert violation.vm == "vm1"
    assert violation.nodes == ("n1", "n2")
    assert "n2" in violation.detail
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors == [f"event=one_copy_violation vm=vm1 nodes=n1,n2 detail={violation.detail!r}"]


def test_no_violation_when_the_first_copy_was_destroyed_before(
    world: HypervisorWorld, n1: FaultyDriver, node_driver: Callable[[str], FaultyDriver]
) -> None:
    n2 = node_driver("n2")
    n2.define(make_spec())
    start_running(n1)
    begun = time.monotonic()
    destroy = Background(lambda: n1.destroy("vm1"))
    # A destroy holds the domain for its whole duration.
    holds_for(lambda: world.holders("vm1") == {"n1"}, TIMINGS.destroy / 2, "held while destroying")
    assert destroy.join().error is None
    assert time.monotonic() - begun >= TIMINGS.destroy
    assert world.holders("vm1") == set()
    assert n1.stop_reason("vm1") is StopReason.DESTROYED

    start_running(n2)
    assert world.holders("vm1") == {"n2"}
    assert world.violations == []


def test_a_guest_that_ignores_acpi_keeps_running(world: HypervisorWorld, n1: FaultyDriver) -> None:
    world.ignore_acpi("vm1")
    start_running(n1)
    n1.shutdown("vm1")
    holds_for(lambda: n1.state("vm1") is DomainState.RUNNING, TIMINGS.shutdown * 2, "still running")
    assert world.holders("vm1") == {"n1"}


def test_an_acpi_shutdown_goes_shutting_down_then_off_with_an_event(
    world: HypervisorWorld, n1: FaultyDriver
) -> None:
    events: list[str] = []
    n1.watch_lifecycle(events.append)
    start_running(n1)
    wait_for(lambda: len(events) >= 2, timeout=1, what="starting and running events")
    before = len(events)

    n1.shutdown("vm1")
    assert n1.state("vm1") is DomainState.SHUTTING_DOWN
    assert n1.stop_reason("vm1") is StopReason.NOT_STOPPED
    assert world.holders("vm1") == {"n1"}
    wait_for(lambda: n1.state("vm1") is DomainState.SHUTOFF, timeout=2, what="guest off")
    assert n1.stop_reason("vm1") is StopReason.GUEST_SHUTDOWN
    assert world.holders("vm1") == set()
    wait_for(lambda: len(events) >= before + 2, timeout=1, what="shutting-down and off events")
    assert set(events) == {"vm1"}


def test_a_destroy_cancels_a_pending_acpi_shutdown(
    world: HypervisorWorld, n1: FaultyDriver
) -> None:
    start_running(n1)
    n1.shutdown("vm1")
    n1.destroy("vm1")
    assert n1.stop_reason("vm1") is StopReason.DESTROYED
    n1.start("vm1")
    holds_for(
        lambda: n1.state("vm1") is DomainState.RUNNING,
        TIMINGS.shutdown * 1.5,
        "the cancelled shutdown never lands",
    )


def test_a_crash_is_off_at_once_with_reason_crashed(
    world: HypervisorWorld, n1: FaultyDriver
) -> None:
    events: list[str] = []
    start_running(n1)
    n1.watch_lifecycle(events.append)
    world.crash("n1", "vm1")
    assert world.holders("vm1") == set()
    assert n1.state("vm1") is DomainState.CRASHED
    assert n1.stop_reason("vm1") is StopReason.CRASHED
    wait_for(lambda: events == ["vm1"], timeout=1, what="crash event")
    start_running(n1)
    assert n1.stop_reason("vm1") is StopReason.NOT_STOPPED


def test_a_crash_or_destroy_during_a_start_fails_it(
    world: HypervisorWorld, n1: FaultyDriver
) -> None:
    start = Background(lambda: n1.start("vm1"))
    wait_for(lambda: world.holders("vm1") == {"n1"}, timeout=1, what="starting")
    world.crash("n1", "vm1")
    assert isinstance(start.join().error, OperationFailed)
    assert n1.state("vm1") is DomainState.CRASHED

    start = Background(lambda: n1.start("vm1"))
    wait_for(lambda: world.holders("vm1") == {"n1"}, timeout=1, what="starting again")
    n1.destroy("vm1")
    assert isinstance(start.join().error, OperationFailed)
    assert n1.state("vm1") is DomainState.SHUTOFF
    assert world.holders("vm1") == set()


def test_pause_and_resume_keep_the_domain_held(world: HypervisorWorld, n1: FaultyDriver) -> None:
    start_running(n1)
    world.pause("n1", "vm1")
    assert n1.state("vm1") is DomainState.PAUSED
    assert world.holders("vm1") == {"n1"}
    n1.start("vm1")  # paused is up: a no-op, as libvirt's
    assert n1.state("vm1") is DomainState.PAUSED
    world.resume("n1", "vm1")
    assert n1.state("vm1") is DomainState.RUNNING


def test_a_cut_node_raises_unavailable_and_keeps_its_domains(
    world: HypervisorWorld, n1: FaultyDriver
) -> None:
    start_running(n1)
    world.cut("n1")
    for call in (
        lambda: n1.state("vm1"),
        lambda: n1.list_managed(),
        lambda: n1.destroy("vm1"),
        lambda: n1.define(make_spec("vm2")),
        lambda: n1.host_facts(),
    ):
        with pytest.raises(HypervisorUnavailable):
            call()
    assert world.holders("vm1") == {"n1"}
    assert world.powered("n1")

    world.uncut("n1")
    assert n1.state("vm1") is DomainState.RUNNING


def test_power_off_ends_every_holding_and_a_start_under_way(
    world: HypervisorWorld, n1: FaultyDriver
) -> None:
    powered: list[tuple[str, bool]] = []
    world.on_power(lambda node, on: powered.append((node, on)))
    n1.define(make_spec("vm2"))
    start_running(n1, "vm2")
    start = Background(lambda: n1.start("vm1"))
    wait_for(lambda: world.holders("vm1") == {"n1"}, timeout=1, what="starting")

    world.power_off("n1")
    assert world.held_by("n1") == set()
    # Had the start completed first it would have succeeded: it was cut short.
    assert isinstance(start.join().error, HypervisorUnavailable)
    assert not world.powered("n1")
    assert powered == [("n1", False)]
    with pytest.raises(HypervisorUnavailable):
        n1.state("vm2")

    world.power_on("n1")
    assert powered == [("n1", False), ("n1", True)]
    assert n1.list_managed() == []
    assert n1.state("vm1") is DomainState.ABSENT
    n1.define(make_spec())
    start_running(n1)
    assert world.violations == []


def test_a_second_driver_for_a_node_shares_its_host(
    world: HypervisorWorld, n1: FaultyDriver, tmp_path: Path
) -> None:
    start_running(n1)
    n1.close()
    with pytest.raises(HypervisorUnavailable):
        n1.state("vm1")
    restarted = world.driver("n1", write_test_host_xml(tmp_path / "n1.xml", 4096, 2))
    assert restarted.state("vm1") is DomainState.RUNNING
    restarted.undefine("vm1")
    assert restarted.state("vm1") is DomainState.ABSENT
    assert world.holders("vm1") == set()


def test_the_agent_switches_the_simulated_power(world: HypervisorWorld, n1: FaultyDriver) -> None:
    agent = world.agent("n1")
    assert isinstance(agent, FenceAgent)
    assert agent.description == "simulated power of n1"
    assert agent.power_status() is PowerState.ON
    start_running(n1)

    agent.power_off()
    assert agent.power_status() is PowerState.OFF
    assert not world.powered("n1")
    assert world.holders("vm1") == set()
    agent.power_on()
    assert agent.power_status() is PowerState.ON
    assert n1.list_managed() == []
    assert [t.state for t in world.transitions if t.node == "n1"][-3:] == [
        "off:power-lost",
        "power-off",
        "power-on",
    ]
