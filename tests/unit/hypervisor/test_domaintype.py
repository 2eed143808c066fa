"""How the domain type is chosen: libvirt's capabilities, and whether QEMU's
user can open the KVM device (a file of the test's own stands in for /dev/kvm)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hypervisor.domaintype import (
    choose_domain_type,
    default_domain_type,
    is_local_uri,
    qemu_kvm_access_problem,
)

# No such user or group on any machine: QEMU's access is decided by the "other" bits.
STRANGER = 4242421
STRANGER_LABEL = f"+{STRANGER}:+{STRANGER}"


def capabilities(
    guests: dict[str, list[str]], *, arch: str = "x86_64", label: str = STRANGER_LABEL
) -> str:
    """libvirt's getCapabilities() as QEMU's driver writes it, reduced to what matters:
    the host's architecture, QEMU's DAC label, and the domain types per guest arch."""
    guest_xml = "".join(
        f"<guest><os_type>hvm</os_type><arch name='{name}'>"
        + "".join(f"<domain type='{t}'/>" for t in types)
        + "</arch></guest>"
        for name, types in guests.items()
    )
    return (
        f"<capabilities><host><cpu><arch>{arch}</arch></cpu>"
        "<secmodel><model>none</model><doi>0</doi></secmodel>"
        f"<secmodel><model>dac</model><doi>0</doi><baselabel type='kvm'>{label}</baselabel>"
        f"<baselabel type='qemu'>{label}</baselabel></secmodel></host>{guest_xml}</capabilities>"
    )


@pytest.fixture
def device(tmp_path: Path) -> Path:
    path = tmp_path / "kvm"
    path.touch()
    return path


BOTH = {"i686": ["qemu", "kvm"], "x86_64": ["qemu", "kvm"]}


def test_kvm_when_offered_and_qemu_can_open_the_device(device: Path) -> None:
    device.chmod(0o666)
    choice = choose_domain_type(capabilities(BOTH), local=True, kvm_device=str(device))
    assert choice.type == "kvm"
    assert choice.why == "libvirt offers kvm guests for x86_64"


def test_qemu_when_offered_kvm_but_qemu_cannot_open_the_device(device: Path) -> None:
    # What a host without udev's rule has: /dev/kvm root-only, although libvirt offers kvm.
    device.chmod(0o600)
    choice = choose_domain_type(capabilities(BOTH), local=True, kvm_device=str(device))
    assert choice.type == "qemu"
    assert f"QEMU runs as {STRANGER} (groups {STRANGER})" in choice.why
    assert f"which cannot open {device} (-rw-------" in choice.why
    assert "root:kvm 0660" in choice.why
    assert choice.why.endswith("guests are emulated (TCG), far slower")


def test_group_read_write_is_enough_and_needed(device: Path) -> None:
    label = f"+{STRANGER}:+{os.stat(device).st_gid}"  # QEMU in the device's group
    device.chmod(0o660)
    assert qemu_kvm_access_problem(label, str(device)) is None
    device.chmod(0o640)
    assert qemu_kvm_access_problem(label, str(device)) is not None
    device.chmod(0o606)  # the other bits do not apply to a member of the group
    assert qemu_kvm_access_problem(label, str(device)) is not None


def test_qemu_as_root_or_of_unknown_label_opens_it(device: Path) -> None:
    device.chmod(0o600)
    assert qemu_kvm_access_problem("+0:+0", str(device)) is None
    assert qemu_kvm_access_problem(None, str(device)) is None
    assert qemu_kvm_access_problem("selinux:label", str(device)) is None


def test_a_missing_device_rules_kvm_out(tmp_path: Path) -> None:
    missing = tmp_path / "no-kvm"
    choice = choose_domain_type(capabilities(BOTH), local=True, kvm_device=str(missing))
    assert choice.type == "qemu"
    assert choice.why.startswith(f"{missing} does not exist")


def test_a_remote_hypervisor_is_taken_at_its_word(device: Path) -> None:
    device.chmod(0o600)  # this machine's device says nothing of another host's
    choice = choose_domain_type(capabilities(BOTH), local=False, kvm_device=str(device))
    assert choice.type == "kvm"


def test_qemu_when_libvirt_offers_no_kvm_for_the_hosts_arch(device: Path) -> None:
    device.chmod(0o666)
    caps = capabilities({"i686": ["qemu", "kvm"], "x86_64": ["qemu"]})
    choice = choose_domain_type(caps, local=True, kvm_device=str(device))
    assert choice.type == "qemu"
    assert choice.why == (
        "libvirt offers no kvm guests for x86_64: guests are emulated (TCG), far slower"
    )


def test_none_when_libvirt_offers_neither(device: Path) -> None:
    choice = choose_domain_type(
        capabilities({"i686": ["qemu", "kvm"], "x86_64": ["test"]}),
        local=True,
        kvm_device=str(device),
    )
    assert choice.type is None
    assert choice.why == "libvirt offers no kvm guests for x86_64, nor qemu (TCG) guests"


def test_none_when_kvm_is_unusable_and_there_is_no_qemu(device: Path) -> None:
    device.chmod(0o600)
    caps = capabilities({"x86_64": ["kvm"]})
    choice = choose_domain_type(caps, local=True, kvm_device=str(device))
    assert choice.type is None
    assert "cannot open" in choice.why
    assert choice.why.endswith(", nor qemu (TCG) guests")


@pytest.mark.parametrize(
    ("uri", "fixed"),
    [
        ("test:///default", "test"),
        ("test+unix:///tmp/x.xml", "test"),
        ("qemu:///system", None),
        ("qemu+ssh://hv1/system", None),
    ],
)
def test_only_the_test_driver_is_decided_by_the_uri(uri: str, fixed: str | None) -> None:
    assert default_domain_type(uri) == fixed


@pytest.mark.parametrize(
    ("uri", "local"),
    [
        ("qemu:///system", True),
        ("qemu+unix:///system?socket=/tmp/node-a/run/libvirt-sock", True),
        ("qemu+tcp://localhost/system", True),
        ("qemu+ssh://root@hv1/system", False),
        ("qemu+tls://10.0.0.2/system", False),
    ],
)
def test_local_uris(uri: str, local: bool) -> None:
    assert is_local_uri(uri) is local
