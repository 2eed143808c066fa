"""The rendered XML on real QEMU/KVM, against libvirtd daemons these tests start themselves.

``system_libvirtd`` reuses or starts the host's libvirtd; ``isolated_libvirtd_pair`` runs
two independent ones for live migration. Both skip, with the reason, where there is no
root, no /dev/kvm or no libvirtd, and fail at once, with QEMU's reason, where QEMU cannot
use /dev/kvm (``scripts/setup-host.sh`` fixes a root-only one). Guest firmware hangs
under this nested KVM, which suits these tests: the guests only need to exist, run and
ignore ACPI.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import libvirt
import pytest

from hypervisor import DiskSpec, DomainSpec, DomainState, LibvirtDriver
from hypervisor.domaintype import choose_domain_type
from localcluster.libvirtd import LibvirtDaemon
from tests.helpers import wait_for
from tests.kvm_fixtures import LibvirtdPair, isolated_libvirtd_pair, system_libvirtd

__all__ = ["isolated_libvirtd_pair", "system_libvirtd"]  # fixtures, imported for pytest

pytestmark = pytest.mark.kvm

T = TypeVar("T")

# How long a guest without an OS gets to act on an ACPI power-off request before the
# test concludes it ignored it. It has nothing to act with, so this only bounds the test.
ACPI_GRACE_SECONDS = 2.0
# Disk images must sit where QEMU (user libvirt-qemu) can reach them; pytest's temporary
# folders are private to root.
IMAGES_DIR = Path("/var/lib/libvirt/images")


def timed(label: str, call: Callable[[], T]) -> T:
    started = time.monotonic()
    result = call()
    print(f"{label}: {time.monotonic() - started:.3f}s")
    return result


def make_spec(prefix: str = "pvc-test", **kwargs: object) -> DomainSpec:
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    return DomainSpec(
        name=name,
        uuid=str(uuid.uuid4()),
        vcpus=1,
        memory_mib=64,
        owner_tag="t",
        **kwargs,  # type: ignore[arg-type]
    )


@pytest.fixture
def system_driver(system_libvirtd: LibvirtDaemon) -> Iterator[LibvirtDriver]:
    with LibvirtDriver(system_libvirtd.uri) as driver:
        yield driver


def test_the_driver_chooses_kvm_from_libvirts_capabilities(
    system_driver: LibvirtDriver,
) -> None:
    facts = system_driver.host_facts()
    assert (facts.domain_type, facts.no_guests_reason) == ("kvm", None)
    assert system_driver.domain_type_choice.why.startswith("libvirt offers kvm guests for ")


def test_a_root_only_kvm_device_means_emulated_guests(
    system_libvirtd: LibvirtDaemon, tmp_path: Path
) -> None:
    """This host's real capabilities (libvirt offers kvm), with a stand-in device as a host
    without udev's rule has /dev/kvm: QEMU, run as libvirt-qemu, could not open it."""
    conn = libvirt.open(system_libvirtd.uri)
    try:
        capabilities = str(conn.getCapabilities())
    finally:
        conn.close()
    device = tmp_path / "kvm"
    device.touch(mode=0o600)
    device.chmod(0o600)
    choice = choose_domain_type(capabilities, local=True, kvm_device=str(device))
    assert choice.type == "qemu"
    assert "which cannot open" in choice.why and "(-rw------- root:root)" in choice.why
    device.chmod(0o666)
    assert choose_domain_type(capabilities, local=True, kvm_device=str(device)).type == "kvm"


def test_diskless_domain_defines_starts_and_goes(system_driver: LibvirtDriver) -> None:
    spec = make_spec()
    name = spec.name
    try:
        timed("define", lambda: system_driver.define(spec))
        assert system_driver.state(name) is DomainState.SHUTOFF
        timed("start", lambda: system_driver.start(name))
        assert system_driver.state(name) is DomainState.RUNNING
        assert name in {info.name for info in system_driver.list_managed()}
        facts = system_driver.host_facts()
        assert facts.memory_free_bytes is not None
        assert 0 < facts.memory_free_bytes <= facts.memory_total_bytes
    finally:
        timed("undefine (destroy + undefine)", lambda: system_driver.undefine(name))
    assert system_driver.state(name) is DomainState.ABSENT


def test_guest_without_os_ignores_acpi_shutdown_until_destroyed(
    system_driver: LibvirtDriver,
) -> None:
    spec = make_spec()
    name = spec.name
    try:
        system_driver.define(spec)
        system_driver.start(name)
        assert system_driver.state(name) is DomainState.RUNNING

        system_driver.shutdown(name)
        grace_ends = time.monotonic() + ACPI_GRACE_SECONDS

        def still_running_through_grace() -> bool:
            assert system_driver.state(name) is DomainState.RUNNING
            return time.monotonic() >= grace_ends

        wait_for(
            still_running_through_grace,
            timeout=ACPI_GRACE_SECONDS + 10,
            what="the ACPI grace period to pass",
        )

        timed("destroy", lambda: system_driver.destroy(name))
        assert system_driver.state(name) is DomainState.SHUTOFF
        system_driver.destroy(name)  # a no-op once it is off
        assert system_driver.state(name) is DomainState.SHUTOFF
    finally:
        system_driver.undefine(name)


@pytest.fixture
def images_dir() -> Iterator[Path]:
    if not IMAGES_DIR.is_dir():
        pytest.skip(f"{IMAGES_DIR} is missing (libvirt-daemon-system not installed?)")
    folder = IMAGES_DIR / f"pvc-test-{uuid.uuid4().hex[:8]}"
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_qcow2_disk_is_created_and_attached(system_driver: LibvirtDriver, images_dir: Path) -> None:
    size = 64 * 1024 * 1024
    path = images_dir / "root.qcow2"
    spec = make_spec(disks=(DiskSpec(target="vda", path=str(path), size_bytes=size),))
    name = spec.name
    assert not path.exists()
    try:
        timed("create a 64 MiB qcow2 disk", lambda: system_driver.create_disk(spec.disks[0]))
        timed("define with it", lambda: system_driver.define(spec))
        info = json.loads(
            subprocess.run(
                ["qemu-img", "info", "-U", "--output=json", str(path)],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
        )
        assert info["format"] == "qcow2"
        assert info["virtual-size"] == size

        system_driver.start(name)
        assert system_driver.state(name) is DomainState.RUNNING
        conn = libvirt.open(system_driver.uri)
        try:
            live_xml = conn.lookupByName(name).XMLDesc(0)
        finally:
            conn.close()
        disks = ET.fromstring(live_xml).findall("./devices/disk")
        assert len(disks) == 1
        disk = disks[0]
        assert disk.get("device") == "disk"
        assert disk.find("source").get("file") == str(path)  # type: ignore[union-attr]
        assert disk.find("driver").get("type") == "qcow2"  # type: ignore[union-attr]
        assert disk.find("target").get("dev") == "vda"  # type: ignore[union-attr]
    finally:
        system_driver.undefine(name)
    # undefine leaves disk images in place.
    assert path.is_file()


def test_live_migration_between_two_isolated_daemons(
    isolated_libvirtd_pair: LibvirtdPair,
) -> None:
    pair = isolated_libvirtd_pair
    spec = make_spec("pvc-migrate")
    name = spec.name
    with LibvirtDriver(pair.a.uri) as node_a, LibvirtDriver(pair.b.uri) as node_b:
        assert node_a.host_facts().hostname == node_b.host_facts().hostname
        try:
            node_a.define(spec)
            node_a.start(name)
            assert node_a.state(name) is DomainState.RUNNING
            assert node_b.state(name) is DomainState.ABSENT

            source = libvirt.open(pair.a.uri)
            try:
                domain = source.lookupByName(name)
                assert ET.fromstring(domain.XMLDesc(0)).get("type") == "kvm"
                flags = (
                    libvirt.VIR_MIGRATE_LIVE
                    | libvirt.VIR_MIGRATE_PEER2PEER
                    | libvirt.VIR_MIGRATE_PERSIST_DEST
                    | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE
                )
                params = {libvirt.VIR_MIGRATE_PARAM_URI: "tcp://127.0.0.1"}
                timed(
                    "live migration node-a -> node-b (64 MiB)",
                    lambda: domain.migrateToURI3(pair.b.uri, params, flags),
                )
            finally:
                source.close()

            assert node_b.state(name) is DomainState.RUNNING
            assert node_a.state(name) in (DomainState.ABSENT, DomainState.SHUTOFF)
            assert name in {info.name for info in node_b.list_managed()}
        finally:
            node_a.undefine(name)
            node_b.undefine(name)
        assert node_a.state(name) is DomainState.ABSENT
        assert node_b.state(name) is DomainState.ABSENT
