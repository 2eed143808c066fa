"""Domain XML: render a DomainSpec for libvirt, and read PVC's tag back.

The same XML must be accepted by the test driver (integration tests, the
local cluster) and by QEMU/KVM (e2e, production), so it stays to elements
both understand.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from hypervisor.domain import DomainSpec
from hypervisor.storage.base import RbdSource

PVC_METADATA_NS = "https://pvc.invalid/xmlns/vm/1"
PVC_METADATA_PREFIX = "pvc"

_PVC_VM = f"{{{PVC_METADATA_NS}}}vm"

# libvirt keeps the prefix it is given for metadata elements; registering it
# makes the stored XML read <pvc:vm> instead of ElementTree's <ns0:vm>.
ET.register_namespace(PVC_METADATA_PREFIX, PVC_METADATA_NS)


def render_domain_xml(spec: DomainSpec, domain_type: str, console_log: str | None = None) -> str:
    """Domain XML for `spec`; `domain_type` is "test", "kvm" or "qemu"; `console_log`: the
    file the serial console's output is appended to (by libvirt's virtlogd)."""
    domain = ET.Element("domain", type=domain_type)
    ET.SubElement(domain, "name").text = spec.name
    ET.SubElement(domain, "uuid").text = spec.uuid

    metadata = ET.SubElement(domain, "metadata")
    ET.SubElement(metadata, _PVC_VM, owner=spec.owner_tag)

    memory_kib = str(spec.memory_mib * 1024)
    ET.SubElement(domain, "memory", unit="KiB").text = memory_kib
    ET.SubElement(domain, "currentMemory", unit="KiB").text = memory_kib
    ET.SubElement(domain, "vcpu", placement="static").text = str(spec.vcpus)

    os_element = ET.SubElement(domain, "os")
    ET.SubElement(os_element, "type").text = "hvm"
    ET.SubElement(os_element, "boot", dev="hd")
    # A diskless guest on a managed network PXE-boots.
    ET.SubElement(os_element, "boot", dev="network")

    # Without ACPI, QEMU has no way to pass shutdown() on to the guest.
    features = ET.SubElement(domain, "features")
    ET.SubElement(features, "acpi")
    ET.SubElement(features, "apic")

    devices = ET.SubElement(domain, "devices")
    for disk in spec.disks:
        if disk.rbd is not None:
            _add_rbd_disk(devices, disk.target, disk.rbd)
            continue
        disk_element = ET.SubElement(devices, "disk", type="file", device="disk")
        ET.SubElement(disk_element, "driver", name="qemu", type=disk.format)
        ET.SubElement(disk_element, "source", file=disk.path)
        ET.SubElement(disk_element, "target", dev=disk.target, bus="virtio")
    for nic in spec.nics:
        nic_element = ET.SubElement(devices, "interface", type="bridge")
        ET.SubElement(nic_element, "mac", address=nic.mac)
        ET.SubElement(nic_element, "source", bridge=nic.bridge)
        ET.SubElement(nic_element, "model", type=nic.model)
    # A serial console instead of graphics: libvirt rejects <graphics type='none'/>
    # and a console is all an operator needs to reach a headless guest.
    serial = ET.SubElement(devices, "serial", type="pty")
    ET.SubElement(serial, "target", port="0")
    if console_log is not None:
        ET.SubElement(serial, "log", file=console_log, append="on")
    console = ET.SubElement(devices, "console", type="pty")
    ET.SubElement(console, "target", type="serial", port="0")

    ET.indent(domain)
    return ET.tostring(domain, encoding="unicode")


def _add_rbd_disk(devices: ET.Element, target: str, rbd: RbdSource) -> None:
    """An RBD image as a network disk: QEMU opens it through librbd, as ``rbd.user`` with the
    key from the libvirt secret ``rbd.secret_uuid``. Writeback caching is what Ceph advises
    for RBD (librbd flushes on the guest's flush requests)."""
    disk = ET.SubElement(devices, "disk", type="network", device="disk")
    ET.SubElement(disk, "driver", name="qemu", type=rbd.format, cache="writeback")
    auth = ET.SubElement(disk, "auth", username=rbd.user)
    ET.SubElement(auth, "secret", type="ceph", uuid=rbd.secret_uuid)
    source = ET.SubElement(disk, "source", protocol="rbd", name=rbd.image)
    for host, port in rbd.hosts:
        ET.SubElement(source, "host", name=host, port=str(port))
    ET.SubElement(disk, "target", dev=target, bus="virtio")


def find_owner_tag(xml: str) -> str | None:
    """The owner recorded in PVC's metadata element, None when there is none."""
    root = ET.fromstring(xml)
    element = root.find(f"./metadata/{_PVC_VM}")
    if element is None:
        return None
    return element.get("owner", "")


def owner_of_metadata(element: str) -> str:
    """The owner in PVC's metadata element as libvirt's ``virDomain.metadata`` returns it
    (the element alone), "" when it names none."""
    return ET.fromstring(element).get("owner", "")


def read_owner_tag(xml: str) -> str:
    """The owner recorded in PVC's metadata element, "" when there is none."""
    return find_owner_tag(xml) or ""
