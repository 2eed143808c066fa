import xml.etree.ElementTree as ET

import pytest

from hypervisor import (
    PVC_METADATA_NS,
    DiskSpec,
    DomainSpec,
    NicSpec,
    find_owner_tag,
    read_owner_tag,
    render_domain_xml,
)

SPEC = DomainSpec(
    name="web-1",
    uuid="6f0c1c52-3a44-4a59-9d7c-0e0f7b1d2a10",
    vcpus=2,
    memory_mib=512,
    disks=(
        DiskSpec(target="vda", path="/var/lib/pvc/web-1-root.qcow2"),
        DiskSpec(target="vdb", path="/var/lib/pvc/web-1-data.raw", format="raw"),
    ),
    nics=(
        NicSpec(mac="52:54:00:12:34:56", bridge="vmbr100"),
        NicSpec(mac="52:54:00:12:34:57", bridge="vmbr200", model="e1000"),
    ),
    owner_tag="cluster-a",
)


def rendered(spec: DomainSpec = SPEC, domain_type: str = "kvm") -> ET.Element:
    return ET.fromstring(render_domain_xml(spec, domain_type))


def child(element: ET.Element, path: str) -> ET.Element:
    found = element.find(path)
    assert found is not None, path
    return found


@pytest.mark.parametrize("domain_type", ["test", "kvm", "qemu"])
def test_domain_type_and_identity(domain_type: str) -> None:
    root = rendered(domain_type=domain_type)
    assert root.tag == "domain"
    assert root.get("type") == domain_type
    assert root.findtext("name") == "web-1"
    assert root.findtext("uuid") == SPEC.uuid


def test_memory_in_kib_and_vcpus() -> None:
    root = rendered()
    for tag in ("memory", "currentMemory"):
        element = root.find(tag)
        assert element is not None
        assert element.get("unit") == "KiB"
        assert element.text == str(512 * 1024)
    assert root.findtext("vcpu") == "2"


def test_os_is_hvm_with_acpi() -> None:
    root = rendered()
    assert root.findtext("os/type") == "hvm"
    assert root.find("features/acpi") is not None


def test_disks() -> None:
    disks = rendered().findall("devices/disk")
    assert [d.get("type") for d in disks] == ["file", "file"]
    assert [d.get("device") for d in disks] == ["disk", "disk"]
    assert [child(d, "driver").get("type") for d in disks] == ["qcow2", "raw"]
    assert [child(d, "source").get("file") for d in disks] == [x.path for x in SPEC.disks]
    assert [child(d, "target").get("dev") for d in disks] == ["vda", "vdb"]
    assert {child(d, "target").get("bus") for d in disks} == {"virtio"}


def test_nics() -> None:
    nics = rendered().findall("devices/interface")
    assert [n.get("type") for n in nics] == ["bridge", "bridge"]
    assert [child(n, "mac").get("address") for n in nics] == [x.mac for x in SPEC.nics]
    assert [child(n, "source").get("bridge") for n in nics] == ["vmbr100", "vmbr200"]
    assert [child(n, "model").get("type") for n in nics] == ["virtio", "e1000"]


def test_no_graphics_but_a_serial_console() -> None:
    root = rendered()
    assert root.find("devices/graphics") is None
    assert child(root, "devices/serial").get("type") == "pty"


def test_metadata_carries_owner_in_pvc_namespace() -> None:
    element = rendered().find(f"metadata/{{{PVC_METADATA_NS}}}vm")
    assert element is not None
    assert element.get("owner") == "cluster-a"


def test_metadata_uses_pvc_prefix() -> None:
    assert "<pvc:vm " in render_domain_xml(SPEC, "kvm")


def test_owner_tag_round_trip() -> None:
    xml = render_domain_xml(SPEC, "test")
    assert read_owner_tag(xml) == "cluster-a"
    assert find_owner_tag(xml) == "cluster-a"


def test_empty_owner_tag_still_marks_the_domain_as_ours() -> None:
    xml = render_domain_xml(DomainSpec(name="a", uuid=SPEC.uuid, vcpus=1, memory_mib=64), "test")
    assert find_owner_tag(xml) == ""
    assert read_owner_tag(xml) == ""


def test_foreign_domain_has_no_owner() -> None:
    xml = "<domain type='kvm'><name>x</name><metadata><other xmlns='urn:x'/></metadata></domain>"
    assert find_owner_tag(xml) is None
    assert read_owner_tag(xml) == ""


def test_names_are_escaped() -> None:
    spec = DomainSpec(name="a<b&c", uuid=SPEC.uuid, vcpus=1, memory_mib=64, owner_tag='"x"')
    root = rendered(spec)
    assert root.findtext("name") == "a<b&c"
    assert find_owner_tag(render_domain_xml(spec, "kvm")) == '"x"'


def test_diskless_nicless_domain_has_no_disks_or_interfaces() -> None:
    root = rendered(DomainSpec(name="tiny", uuid=SPEC.uuid, vcpus=1, memory_mib=64))
    assert root.findall("devices/disk") == []
    assert root.findall("devices/interface") == []
