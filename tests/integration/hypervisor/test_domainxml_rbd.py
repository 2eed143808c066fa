"""RBD network disks in the domain XML, as libvirt's test driver takes and gives them back,
and the Ceph secret that the test driver (which has no secrets) keeps in the driver.
The same XML on a real QEMU/KVM: tests/e2e/test_e2e_kvm_rbd.py."""

from __future__ import annotations

import base64
import logging
import os
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest

from hypervisor import (
    DiskSpec,
    DomainSpec,
    DomainState,
    LibvirtDriver,
    OperationFailed,
    render_domain_xml,
    write_test_host_xml,
)
from hypervisor.storage.base import RbdSource

SECRET_UUID = "0d3c5d0e-8f5b-4c1b-9a64-0c6a4cbb7a11"
KEY = base64.b64encode(os.urandom(28)).decode()
RBD = RbdSource(
    image="rbd/web-root",
    hosts=(("10.0.0.1", 6789), ("10.0.0.2", 3300)),
    user="pvc",
    secret_uuid=SECRET_UUID,
)
SPEC = DomainSpec(
    name="web",
    uuid=str(uuid.uuid5(uuid.NAMESPACE_DNS, "web.pvc.invalid")),
    vcpus=1,
    memory_mib=64,
    disks=(
        DiskSpec(target="vda", path="rbd/web-root", format="raw", rbd=RBD),
        DiskSpec(target="vdb", path="/var/lib/pvc/web-data.qcow2"),
    ),
    owner_tag="test-cluster",
)


@pytest.fixture
def uri(tmp_path: Path) -> str:
    return write_test_host_xml(tmp_path / "node1.xml", 4096, 2)


@pytest.fixture
def driver(uri: str) -> Iterator[LibvirtDriver]:
    with LibvirtDriver(uri) as d:
        yield d


def test_an_rbd_disk_is_defined_as_a_network_disk(uri: str) -> None:
    """The rendered XML as libvirt takes it, stores it and gives it back."""
    conn = libvirt.open(uri)
    try:
        domain = conn.defineXML(render_domain_xml(SPEC, "test"))
        domain.create()
        xml = ET.fromstring(domain.XMLDesc(0))
    finally:
        conn.close()
    rbd_disk, file_disk = xml.findall("./devices/disk")

    assert rbd_disk.get("type") == "network"
    assert rbd_disk.get("device") == "disk"
    driver_element = rbd_disk.find("driver")
    assert driver_element is not None
    assert driver_element.attrib == {"name": "qemu", "type": "raw", "cache": "writeback"}
    auth = rbd_disk.find("auth")
    assert auth is not None and auth.get("username") == "pvc"
    secret = rbd_disk.find("auth/secret")
    assert secret is not None and secret.attrib == {"type": "ceph", "uuid": SECRET_UUID}
    source = rbd_disk.find("source")
    assert source is not None
    assert source.get("protocol") == "rbd" and source.get("name") == "rbd/web-root"
    assert [(h.get("name"), h.get("port")) for h in source.findall("host")] == [
        ("10.0.0.1", "6789"),
        ("10.0.0.2", "3300"),
    ]
    target = rbd_disk.find("target")
    assert target is not None and target.attrib == {"dev": "vda", "bus": "virtio"}

    # A file disk beside it is as before.
    assert file_disk.get("type") == "file"
    file_source = file_disk.find("source")
    assert file_source is not None and file_source.get("file") == "/var/lib/pvc/web-data.qcow2"


def test_the_driver_defines_and_starts_a_domain_with_an_rbd_disk(driver: LibvirtDriver) -> None:
    driver.ensure_ceph_secret(SECRET_UUID, "pvc-pool-ceph", KEY)
    driver.define(SPEC)
    driver.start(SPEC.name)
    assert driver.state(SPEC.name) == DomainState.RUNNING
    info = driver.info(SPEC.name)
    assert info is not None and info.owner_tag == "test-cluster"


def test_the_test_driver_keeps_the_secret_in_the_driver(
    driver: LibvirtDriver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="hypervisor.libvirt_driver")
    conn = libvirt.open(driver.uri)
    try:
        with pytest.raises(libvirt.libvirtError, match="not supported"):
            conn.secretDefineXML("<secret/>")  # why it is simulated: the test driver has none
    finally:
        conn.close()
    driver.ensure_ceph_secret(SECRET_UUID, "pvc-pool-ceph", KEY)
    driver.ensure_ceph_secret(SECRET_UUID, "pvc-pool-ceph", KEY)  # idempotent
    simulated = [r for r in caplog.records if "event=ceph_secret_simulated" in r.getMessage()]
    assert len(simulated) == 1, [r.getMessage() for r in caplog.records]
    assert KEY not in caplog.text


def test_a_key_that_is_not_base64_is_refused_without_showing_it(driver: LibvirtDriver) -> None:
    with pytest.raises(OperationFailed) as caught:
        driver.ensure_ceph_secret(SECRET_UUID, "pvc-pool-ceph", "not base64 %%%")
    assert "base64" in str(caught.value) and "%%%" not in str(caught.value)
