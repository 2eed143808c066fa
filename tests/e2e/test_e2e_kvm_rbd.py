"""An RBD volume as a real QEMU/KVM guest's disk: RbdVolumes creates the image on the
single-host Ceph (tests/ceph.py), LibvirtDriver puts client.pvc's key into a libvirt secret
and defines and starts a domain whose vda is the image as a network disk, and QEMU, through
librbd, opens it with the size RbdVolumes gave it.

Skips, saying why, without root, /dev/kvm or libvirtd (the ``system_libvirtd`` fixture), or
without the Ceph daemons; fails at once, with QEMU's reason, where QEMU cannot use /dev/kvm.
The domains and the secret it defines on the host's libvirtd are removed at the end.
"""

from __future__ import annotations

import contextlib
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest

from hypervisor import DiskSpec, DomainSpec, DomainState, LibvirtDriver
from hypervisor.storage.base import VolumeInUse
from hypervisor.storage.rbd import RbdVolumes
from localcluster.libvirtd import LibvirtDaemon
from tests.ceph import SingleHostCeph
from tests.kvm_fixtures import qemu_pids, system_libvirtd

__all__ = ["system_libvirtd"]  # a fixture, imported for pytest

pytestmark = pytest.mark.kvm

MIB = 1024 * 1024
PREFIX = f"e2erbd-{uuid.uuid4().hex[:4]}"
SECRET_UUID = str(uuid.uuid4())
SECRET_USAGE = f"{PREFIX} client.pvc"


@pytest.fixture(scope="module")
def conn(system_libvirtd: LibvirtDaemon) -> Iterator[libvirt.virConnect]:
    connection = libvirt.open(system_libvirtd.uri)
    yield connection
    with contextlib.suppress(libvirt.libvirtError):
        connection.secretLookupByUUIDString(SECRET_UUID).undefine()
    connection.close()


@pytest.fixture(scope="module")
def driver(system_libvirtd: LibvirtDaemon, conn: libvirt.virConnect) -> Iterator[LibvirtDriver]:
    with LibvirtDriver(system_libvirtd.uri) as the_driver:
        yield the_driver
        # Whatever a failed test left on the host's daemon goes, by our prefix only.
        for info in the_driver.list_managed():
            if info.name.startswith(PREFIX):
                the_driver.undefine(info.name)


def volumes_at(ceph: SingleHostCeph, monitor: str) -> RbdVolumes:
    return RbdVolumes([monitor], ceph.pool, ceph.user, ceph.key, SECRET_UUID)


@pytest.mark.parametrize("port", ["v1", "v2"])
def test_a_guest_runs_on_an_rbd_volume(
    ceph: SingleHostCeph, driver: LibvirtDriver, conn: libvirt.virConnect, port: str
) -> None:
    """libvirt's ``<host port>`` reaches the monitor at its v1 port and at its v2 port."""
    monitor = ceph.monitors[0] if port == "v1" else f"127.0.0.1:{ceph.v2_port}"
    volumes = volumes_at(ceph, monitor)
    name = f"{PREFIX}-{port}"
    volume = volumes.volume_name(name, "root", "raw")
    volumes.create(volume, 48 * MIB, "raw")
    try:
        driver.ensure_ceph_secret(SECRET_UUID, SECRET_USAGE, ceph.key)
        spec = DomainSpec(
            name=name,
            uuid=str(uuid.uuid4()),
            vcpus=1,
            memory_mib=64,
            disks=(
                DiskSpec(
                    target="vda",
                    path=f"{ceph.pool}/{volume}",
                    format="raw",
                    rbd=volumes.source(volume, None),
                ),
            ),
            owner_tag="e2e-rbd",
        )
        driver.define(spec)
        driver.start(name)
        assert driver.state(name) == DomainState.RUNNING
        domain = conn.lookupByName(name)
        capacity, _allocation, _physical = domain.blockInfo("vda")
        assert capacity == 48 * MIB == volumes.size(volume)
        # libvirt hands QEMU the key encrypted (a secret object), not in its arguments.
        pids = qemu_pids(name)
        assert pids, f"no QEMU runs {name}"
        for pid in pids:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
            assert "rbd" in cmdline and ceph.key not in cmdline
        # QEMU holds the image open: librbd registered a watch on it.
        watchers = ceph.admin("status", f"{ceph.pool}/{volume}", program="rbd")
        assert "watcher=127.0.0.1" in watchers, watchers
        # A volume in use cannot be removed from under the guest.
        with pytest.raises(VolumeInUse, match="it is open") as in_use:
            volumes.delete(volume)
        assert ceph.key not in str(in_use.value)
        assert volumes.exists(volume)
        driver.undefine(name)
    finally:
        with contextlib.suppress(Exception):
            driver.undefine(name)
        volumes.delete(volume)
    assert not volumes.exists(volume)


def test_the_secret_is_private_and_updated_in_place(
    ceph: SingleHostCeph, driver: LibvirtDriver, conn: libvirt.virConnect
) -> None:
    driver.ensure_ceph_secret(SECRET_UUID, SECRET_USAGE, ceph.key)
    driver.ensure_ceph_secret(SECRET_UUID, SECRET_USAGE, ceph.key)  # again: an update
    secret = conn.secretLookupByUUIDString(SECRET_UUID)
    xml = ET.fromstring(secret.XMLDesc(0))
    assert (xml.get("ephemeral"), xml.get("private")) == ("no", "yes")
    usage = xml.find("usage")
    assert usage is not None and usage.get("type") == "ceph"
    assert usage.findtext("name") == SECRET_USAGE
    with pytest.raises(libvirt.libvirtError) as refused:
        secret.value()
    print(f"\nsecretGetValue: {refused.value}")
    assert ceph.key not in str(refused.value)
    matching = [s for s in conn.listAllSecrets(0) if s.UUIDString() == SECRET_UUID]
    assert len(matching) == 1
