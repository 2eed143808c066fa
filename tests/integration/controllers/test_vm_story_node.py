"""A VM's story as one node's controllers tell it, in process against a real ZooKeeper: the
events of a crash and a forced off, on the fault-injecting hypervisor (placements written by
hand, as the primary would), and the console publisher writing only what changed."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from controllers.vm_console import ConsolePublisher
from controllers.vm_controller import VMController
from hypervisor import ConsoleTail, HypervisorWorld, LibvirtDriver, write_test_host_xml
from hypervisor.errors import DomainNotFound
from schemas import Placement, VirtualMachine, VirtualMachineStatus
from tests.helpers import apply_vm, wait_for
from zkstore import Store
from zkstore.console import VMOutputs
from zkstore.events import EventLog


def status_of(store: Store, vm: str) -> VirtualMachineStatus:
    return VirtualMachineStatus.model_validate(store.read_status(VirtualMachine, vm) or {})


def story(store: Store, vm: str) -> list[tuple[str, str, str]]:
    return [(e.reason, e.source, e.type) for e in EventLog(store).list("VirtualMachine", vm)]


@pytest.fixture
def node(vm_node: Callable[..., VMController]) -> VMController:
    return vm_node()


def test_a_crash_and_a_forced_off_are_told_with_the_node(
    store: Store, world: HypervisorWorld, node: VMController
) -> None:
    apply_vm(store, "web", shutdownTimeout="1s")
    store.write_placement("web", Placement(node="n1"), epoch=None)
    wait_for(lambda: status_of(store, "web").phase == "Running", 20, "web Running")
    world.crash("n1", "web")
    wait_for(lambda: ("Crashed", "n1", "Warning") in story(store, "web"), 20, "a Crashed event")
    crashed = next(
        e for e in EventLog(store).list("VirtualMachine", "web") if e.reason == "Crashed"
    )
    assert crashed.message.startswith("stopped unexpectedly on n1 (crashed); 1 in a row")
    wait_for(
        lambda: [r for r, _, _ in story(store, "web")].count("Started") == 2,
        30,
        "started again after the crash",
    )

    world.ignore_acpi("web")
    apply_vm(store, "web", shutdownTimeout="1s", runStrategy="Halted")
    wait_for(lambda: ("ForcedOff", "n1", "Warning") in story(store, "web"), 20, "ForcedOff")
    wait_for(lambda: status_of(store, "web").phase == "Stopped", 20, "web Stopped")
    assert "Stopped" not in [r for r, _, _ in story(store, "web")]  # ForcedOff says it


class FakeConsoles(LibvirtDriver):
    """A test-driver host whose consoles are what the test says."""

    def __init__(self, uri: str) -> None:
        super().__init__(uri)
        self.tails: dict[str, ConsoleTail | Exception] = {}
        self.reads = 0

    def console_tail(self, name: str, limit: int) -> ConsoleTail | None:
        self.reads += 1
        found = self.tails.get(name)
        if isinstance(found, Exception):
            raise found
        return found


def test_the_publisher_writes_what_changed_and_skips_what_cannot_be_read(
    store: Store, tmp_path: Path
) -> None:
    apply_vm(store, "a")
    apply_vm(store, "b")
    driver = FakeConsoles(write_test_host_xml(tmp_path / "n1.xml", 1024, 2))
    placed = ["a", "b"]
    publisher = ConsolePublisher(store, driver, "n1", lambda: placed, limit=8)
    outputs = VMOutputs(store)
    driver.tails = {"a": ConsoleTail(b"hello\n", 6), "b": DomainNotFound("no b here")}
    publisher.publish()
    log = outputs.read_console("a")
    assert log is not None and (log.data, log.end, log.node) == (b"hello\n", 6, "n1")
    assert outputs.read_console("b") is None

    before = store.client.exists(store.path("/consoles/a"))
    publisher.publish()  # nothing changed: nothing written
    assert store.client.exists(store.path("/consoles/a")).mzxid == before.mzxid

    driver.tails["a"] = ConsoleTail(b"o\nworld\n", 14)
    publisher.publish()
    log = outputs.read_console("a")
    assert log is not None and (log.data, log.start, log.end) == (b"o\nworld\n", 6, 14)
    driver.close()
