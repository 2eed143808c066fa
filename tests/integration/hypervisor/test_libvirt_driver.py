"""LibvirtDriver against libvirt's real test driver, one host file per test."""

from __future__ import annotations

import json
import logging
import subprocess
import threading
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from hypervisor import (
    DiskSpec,
    DomainInfo,
    DomainNotFound,
    DomainSpec,
    DomainState,
    HypervisorUnavailable,
    InvalidDomain,
    LibvirtDriver,
    NicSpec,
    OperationFailed,
    libvirt_driver,
    write_test_host_xml,
)
from tests.helpers import wait_for

HOST_MEMORY_MIB = 8192
HOST_CPUS = 4


def make_spec(name: str = "vm1", **changes: Any) -> DomainSpec:
    spec = DomainSpec(
        name=name,
        uuid=str(uuid.uuid5(uuid.NAMESPACE_DNS, f"{name}.pvc.invalid")),
        vcpus=2,
        memory_mib=256,
        nics=(NicSpec(mac="52:54:00:00:00:01", bridge="vmbr0"),),
        owner_tag="test-cluster",
    )
    return replace(spec, **changes)


@pytest.fixture
def host_uri(tmp_path: Path) -> str:
    return write_test_host_xml(tmp_path / "node1.xml", HOST_MEMORY_MIB, HOST_CPUS)


@pytest.fixture
def driver(host_uri: str) -> Iterator[LibvirtDriver]:
    with LibvirtDriver(host_uri) as d:
        yield d


def domain_type_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if "event=domain_type_chosen" in r.getMessage()]


def domain_type_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in domain_type_records(caplog)]


def test_domain_type_is_chosen_once_when_the_connection_opens(
    host_uri: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Lazy: no libvirtd is needed to construct a driver, and none is asked before use.
    lazy = LibvirtDriver("qemu:///system")
    assert lazy.domain_type is None
    assert lazy.domain_type_choice.why == "not connected to qemu:///system yet"
    assert LibvirtDriver("qemu:///system", domain_type="qemu").domain_type == "qemu"

    caplog.set_level(logging.INFO, logger="hypervisor.libvirt_driver")
    with LibvirtDriver(host_uri) as driver:
        assert driver.domain_type == "test"  # the URI decides it
        assert domain_type_lines(caplog) == []
        facts = driver.host_facts()
        driver.define(make_spec())
        driver.host_facts()
    assert (facts.domain_type, facts.no_guests_reason) == ("test", None)
    assert domain_type_lines(caplog) == [
        f'event=domain_type_chosen uri={host_uri} type=test why="libvirt\'s test driver"'
    ]


@pytest.fixture
def no_guests_driver(host_uri: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[LibvirtDriver]:
    """A test-driver host whose type is chosen from its capabilities, like a QEMU host's:
    they offer only "test" domains, so neither kvm nor qemu."""
    monkeypatch.setattr(libvirt_driver, "default_domain_type", lambda _uri: None)
    with LibvirtDriver(host_uri) as d:
        yield d


def test_a_host_that_runs_neither_kvm_nor_qemu_reports_why(
    no_guests_driver: LibvirtDriver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="hypervisor.libvirt_driver")
    facts = no_guests_driver.host_facts()
    why = "libvirt offers no kvm guests for i686, nor qemu (TCG) guests"
    assert (facts.domain_type, facts.no_guests_reason) == (None, why)
    assert facts.memory_total_bytes == HOST_MEMORY_MIB * 2**20
    with pytest.raises(OperationFailed, match=r"define domain 'vm1': .* can run no guests: "):
        no_guests_driver.define(make_spec())
    assert no_guests_driver.state("vm1") is DomainState.ABSENT
    uri = no_guests_driver.uri
    assert domain_type_lines(caplog) == [
        f"event=domain_type_chosen uri={uri} type=none why={why!r}"
    ]
    assert [r.levelno for r in domain_type_records(caplog)] == [logging.WARNING]


def test_define_start_shutdown_destroy_undefine(driver: LibvirtDriver) -> None:
    spec = make_spec()
    assert driver.state("vm1") is DomainState.ABSENT

    driver.define(spec)
    assert driver.state("vm1") is DomainState.SHUTOFF

    driver.start("vm1")
    assert driver.state("vm1") is DomainState.RUNNING

    # The test driver completes an ACPI shutdown at once.
    driver.shutdown("vm1")
    assert driver.state("vm1") is DomainState.SHUTOFF

    driver.start("vm1")
    driver.destroy("vm1")
    assert driver.state("vm1") is DomainState.SHUTOFF

    driver.undefine("vm1")
    assert driver.state("vm1") is DomainState.ABSENT


def test_verbs_are_idempotent(driver: LibvirtDriver) -> None:
    spec = make_spec()
    driver.define(spec)
    driver.define(spec)
    driver.start("vm1")
    driver.start("vm1")
    assert driver.state("vm1") is DomainState.RUNNING
    # Redefining a running domain changes its next boot, not its state.
    driver.define(replace(spec, memory_mib=512))
    assert driver.state("vm1") is DomainState.RUNNING

    driver.destroy("vm1")
    driver.destroy("vm1")
    driver.shutdown("vm1")
    assert driver.state("vm1") is DomainState.SHUTOFF

    driver.undefine("vm1")
    driver.undefine("vm1")
    assert driver.state("vm1") is DomainState.ABSENT


def test_undefine_forces_a_running_domain_off(driver: LibvirtDriver) -> None:
    driver.define(make_spec())
    driver.start("vm1")
    driver.undefine("vm1")
    assert driver.state("vm1") is DomainState.ABSENT
    assert driver.list_managed() == []


def add_foreign_domain(host_uri: str, name: str) -> None:
    """A domain an operator defined by hand, present in the host file."""
    path = host_uri.removeprefix("test://")
    tree = ET.parse(path)
    domain = ET.SubElement(tree.getroot(), "domain", type="test")
    ET.SubElement(domain, "name").text = name
    ET.SubElement(domain, "memory").text = "65536"
    ET.SubElement(ET.SubElement(domain, "os"), "type").text = "hvm"
    tree.write(path)


def test_list_managed_ignores_domains_without_our_metadata(host_uri: str) -> None:
    add_foreign_domain(host_uri, "hand-made")
    with LibvirtDriver(host_uri) as driver:
        assert driver.state("hand-made") is not DomainState.ABSENT

        first, second = make_spec("vm1"), make_spec("vm2", owner_tag="")
        driver.define(first)
        driver.define(second)
        driver.start("vm2")

        managed = sorted(driver.list_managed(), key=lambda info: info.name)
        assert managed == [
            DomainInfo("vm1", first.uuid, DomainState.SHUTOFF, "test-cluster"),
            DomainInfo("vm2", second.uuid, DomainState.RUNNING, ""),
        ]


def test_start_of_an_absent_domain_is_domain_not_found(driver: LibvirtDriver) -> None:
    with pytest.raises(DomainNotFound) as caught:
        driver.start("ghost")
    assert caught.value.domain == "ghost"
    assert caught.value.operation == "start"
    assert "ghost" in str(caught.value)
    assert "start" in str(caught.value)


def test_unknown_disk_format_is_invalid_domain(driver: LibvirtDriver) -> None:
    spec = make_spec(disks=(DiskSpec(target="vda", path="/nonexistent.img", format="bogus"),))
    with pytest.raises(InvalidDomain, match=r"define domain 'vm1'.*bogus"):
        driver.define(spec)
    assert driver.state("vm1") is DomainState.ABSENT


def test_malformed_mac_is_invalid_domain(driver: LibvirtDriver) -> None:
    with pytest.raises(InvalidDomain, match="mac"):
        driver.define(make_spec(nics=(NicSpec(mac="not-a-mac", bridge="vmbr0"),)))


def test_internal_error_rejections_are_operation_failed(driver: LibvirtDriver) -> None:
    # libvirt 9.0 reports a malformed uuid and zero vCPUs as
    # VIR_ERR_INTERNAL_ERROR, so they are not InvalidDomain.
    with pytest.raises(OperationFailed, match="uuid"):
        driver.define(make_spec(uuid="not-a-uuid"))
    with pytest.raises(OperationFailed):
        driver.define(make_spec(vcpus=0))


def test_same_name_with_another_uuid_is_operation_failed(driver: LibvirtDriver) -> None:
    driver.define(make_spec())
    with pytest.raises(OperationFailed, match="already exists"):
        driver.define(make_spec(uuid=str(uuid.uuid4())))


def test_host_facts_match_the_host_file(driver: LibvirtDriver) -> None:
    facts = driver.host_facts()
    assert facts.memory_total_bytes == HOST_MEMORY_MIB * 1024 * 1024
    # The test driver cannot tell free memory.
    assert facts.memory_free_bytes is None
    assert facts.cpus == HOST_CPUS
    assert facts.load1 >= 0.0
    assert facts.hostname


def test_two_host_files_do_not_share_state(tmp_path: Path) -> None:
    uri1 = write_test_host_xml(tmp_path / "node1.xml", 1024, 1)
    uri2 = write_test_host_xml(tmp_path / "node2.xml", 2048, 2)
    with LibvirtDriver(uri1) as node1, LibvirtDriver(uri2) as node2:
        node1.define(make_spec())
        node1.start("vm1")
        assert node2.state("vm1") is DomainState.ABSENT
        assert node2.list_managed() == []

        node2.define(make_spec())
        node2.undefine("vm1")
        assert node1.state("vm1") is DomainState.RUNNING
        assert (node1.host_facts().cpus, node2.host_facts().cpus) == (1, 2)


def test_create_disk_makes_a_qcow2_image_of_the_size(driver: LibvirtDriver, tmp_path: Path) -> None:
    image = tmp_path / "vm1-root.qcow2"
    disk = DiskSpec(target="vda", path=str(image), size_bytes=64 * 1024**2)
    assert not driver.disk_exists(str(image))
    driver.create_disk(disk)
    assert driver.disk_exists(str(image))
    info = json.loads(
        subprocess.run(
            ["qemu-img", "info", "--output=json", str(image)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    assert info["format"] == "qcow2"
    assert info["virtual-size"] == 64 * 1024**2
    assert not list(tmp_path.glob(".*.creating"))  # no temporary left


def test_create_disk_leaves_an_existing_image_alone(driver: LibvirtDriver, tmp_path: Path) -> None:
    image = tmp_path / "vm1-root.qcow2"
    image.write_bytes(b"operator data")
    driver.create_disk(DiskSpec(target="vda", path=str(image), size_bytes=64 * 1024**2))
    assert image.read_bytes() == b"operator data"


def test_create_disk_replaces_a_partial_image_left_by_a_crash(
    driver: LibvirtDriver, tmp_path: Path
) -> None:
    partial = tmp_path / ".vm1-root.qcow2.creating"
    partial.write_bytes(b"half")
    driver.create_disk(
        DiskSpec(target="vda", path=str(tmp_path / "vm1-root.qcow2"), size_bytes=2**20)
    )
    assert not partial.exists()
    assert (tmp_path / "vm1-root.qcow2").stat().st_size > 4


def test_define_never_creates_a_missing_image(driver: LibvirtDriver, tmp_path: Path) -> None:
    image = tmp_path / "vm1-root.qcow2"
    driver.define(make_spec(disks=(DiskSpec(target="vda", path=str(image), size_bytes=2**20),)))
    assert driver.state("vm1") is DomainState.SHUTOFF
    assert not image.exists()
    assert not driver.disk_exists(str(image))


def test_failed_disk_creation_is_operation_failed(driver: LibvirtDriver, tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a folder")
    image = tmp_path / "a-file" / "vm1-root.qcow2"
    with pytest.raises(OperationFailed, match=r"vm1-root\.qcow2"):
        driver.create_disk(DiskSpec(target="vda", path=str(image), size_bytes=1024**2))


def test_a_missing_disk_folder_is_created(driver: LibvirtDriver, tmp_path: Path) -> None:
    image = tmp_path / "new-folder" / "vm1-root.qcow2"
    driver.create_disk(DiskSpec(target="vda", path=str(image), size_bytes=1024**2))
    assert image.is_file()


def test_unreachable_hypervisor_is_unavailable(tmp_path: Path) -> None:
    driver = LibvirtDriver(f"test://{tmp_path}/missing.xml")
    with pytest.raises(HypervisorUnavailable, match="cannot connect"):
        driver.state("vm1")


def test_closed_driver_is_unavailable(driver: LibvirtDriver) -> None:
    driver.close()
    with pytest.raises(HypervisorUnavailable, match="closed"):
        driver.state("vm1")
    driver.close()


def test_a_dead_connection_is_reopened(driver: LibvirtDriver) -> None:
    driver.define(make_spec())
    # Kill the connection behind the driver's back, as a libvirtd restart would.
    assert driver._conn is not None
    driver._conn.close()
    # A reopened test:// connection starts again from the host file.
    assert driver.state("vm1") is DomainState.ABSENT
    driver.define(make_spec())
    assert driver.state("vm1") is DomainState.SHUTOFF


def test_concurrent_starts_of_one_domain_all_succeed(driver: LibvirtDriver) -> None:
    driver.define(make_spec())
    errors: list[Exception] = []
    barrier = threading.Barrier(8)

    def start() -> None:
        barrier.wait()
        try:
            driver.start("vm1")
        except Exception as err:
            errors.append(err)

    threads = [threading.Thread(target=start) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert driver.state("vm1") is DomainState.RUNNING


def test_a_domain_redefined_without_pvc_metadata_is_no_longer_listed(
    driver: LibvirtDriver,
) -> None:
    """The owner is kept per domain between listings (hypervisor/owners.py); a definition
    made since, by anyone, is seen at once when libvirt's DEFINED event arrives."""
    events: list[str] = []
    driver.watch_lifecycle(events.append)
    driver.define(make_spec())
    assert [d.name for d in driver.list_managed()] == ["vm1"]
    conn = driver._connection("test", "vm1")
    xml = conn.lookupByName("vm1").XMLDesc(0)
    root = ET.fromstring(xml)
    root.remove(root.find("metadata"))  # type: ignore[arg-type]
    conn.defineXML(ET.tostring(root, encoding="unicode"))
    wait_for(lambda: driver.list_managed() == [], 10, "vm1 no longer PVC's")
    driver.define(make_spec())  # PVC's own define: its owner again at once
    assert [d.owner_tag for d in driver.list_managed()] == ["test-cluster"]


def test_its_own_define_and_start_are_not_reported_but_what_others_do_is(
    driver: LibvirtDriver,
) -> None:
    """A define or start this driver made is known to its caller: its lifecycle event is
    not passed on (a VM controller reconciled every new VM twice more for them, issue 16).
    The same events caused by anyone else still are, and so is every other event."""
    events: list[str] = []
    driver.watch_lifecycle(events.append)
    driver.define(make_spec("vm1"))
    driver.start("vm1")
    conn = driver._connection("test", "vm1")
    conn.lookupByName("vm1").destroy()  # someone else: reported
    wait_for(lambda: events == ["vm1"], 10, "the outside stop reported")
    conn.lookupByName("vm1").create()  # someone else's start: reported
    wait_for(lambda: events == ["vm1", "vm1"], 10, "the outside start reported")
    xml = conn.lookupByName("vm1").XMLDesc(0)
    conn.defineXML(xml)  # someone else's define: reported
    wait_for(lambda: events == ["vm1"] * 3, 10, "the outside define reported")
    driver.define(make_spec("vm2"))
    driver.start("vm2")
    conn.lookupByName("vm2").destroy()
    wait_for(lambda: events == ["vm1"] * 3 + ["vm2"], 10, "vm2's outside stop, only")
