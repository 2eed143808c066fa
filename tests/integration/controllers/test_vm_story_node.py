"""A VM's story as one node's controllers tell it, in process against a real ZooKeeper: the
events of a crash and a forced off, on the fault-injecting hypervisor (placements written by
hand, as the primary would), and the console publisher writing only what changed."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from controllers.vm_console import ConsolePublisher
from controllers.vm_controller import VMController
from hypervisor import ConsoleTail, HypervisorWorld, LibvirtDriver, write_test_host_xml
from hypervisor.domain import DomainSpec
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


def test_a_defined_domains_xml_goes_out_with_the_next_look(store: Store, tmp_path: Path) -> None:
    """domain_defined publishes nothing itself: the next look writes the XML together with
    the consoles that changed (one transaction), and a VM deleted before it is dropped."""
    for name in ("a", "b", "warm"):
        apply_vm(store, name)
    driver = FakeConsoles(write_test_host_xml(tmp_path / "n1.xml", 1024, 2))
    for name in ("a", "b"):
        driver.define(DomainSpec(name, str(uuid.uuid4()), 1, 64, owner_tag=store.root))
    publisher = ConsolePublisher(store, driver, "n1", lambda: ["a"], limit=64)
    outputs = VMOutputs(store)
    # The first record of each kind makes its parent znode (written alone).
    outputs.write_console("warm", "n1", b"", 0)
    outputs.write_domain_xml("warm", "<domain/>")

    publisher.domain_defined("a")
    publisher.domain_defined("b")
    assert outputs.read_domain_xml("a") is None  # not yet: at the next look
    driver.tails = {"a": ConsoleTail(b"a boots\n", 8)}
    publisher.publish()
    xml = outputs.read_domain_xml("a")
    assert xml is not None and "<name>a</name>" in xml
    assert "<name>b</name>" in (outputs.read_domain_xml("b") or "")
    assert (log := outputs.read_console("a")) is not None and log.data == b"a boots\n"
    zxids = {
        store.client.exists(store.path(p)).mzxid
        for p in ("/domainxml/a", "/domainxml/b", "/consoles/a")
    }
    assert len(zxids) == 1

    before = store.client.exists(store.path("/domainxml/a")).mzxid
    publisher.publish()  # nothing defined or changed since: nothing written
    assert store.client.exists(store.path("/domainxml/a")).mzxid == before
    driver.close()


def test_a_look_that_fails_keeps_every_xml_for_the_next(store: Store, tmp_path: Path) -> None:
    """A look that fails part way (here: reading one domain's XML raises) leaves every
    domain it had to publish for the next look: none is lost."""
    for name in ("a", "b", "c", "warm"):
        apply_vm(store, name)
    driver = FakeConsoles(write_test_host_xml(tmp_path / "n1.xml", 1024, 2))
    for name in ("a", "b", "c"):
        driver.define(DomainSpec(name, str(uuid.uuid4()), 1, 64, owner_tag=store.root))
    publisher = ConsolePublisher(store, driver, "n1", lambda: [], limit=64)
    outputs = VMOutputs(store)
    outputs.write_domain_xml("warm", "<domain/>")
    real = driver.defined_xml

    def broken(name: str) -> str | None:
        if name == "b":
            raise RuntimeError("a bug reading b")
        return real(name)

    driver.defined_xml = broken  # type: ignore[method-assign]
    for name in ("a", "b", "c"):
        publisher.domain_defined(name)
    with pytest.raises(RuntimeError):
        publisher.publish()
    assert outputs.read_domain_xml("a") is None
    driver.defined_xml = real  # type: ignore[method-assign]
    publisher.publish()
    for name in ("a", "b", "c"):
        assert f"<name>{name}</name>" in (outputs.read_domain_xml(name) or "")
    driver.close()
