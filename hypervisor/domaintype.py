"""Which domain type a libvirt host gives guests: kvm, qemu (TCG) or none, and why.

Chosen from libvirt's capabilities and, on this machine, whether QEMU's user can open
the KVM device (libvirt offers kvm even where it cannot).
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from urllib.parse import urlsplit

KVM_DEVICE = "/dev/kvm"


@dataclass(frozen=True)
class DomainTypeChoice:
    """The type this driver gives domains, and why; type None: the host can run none."""

    type: str | None
    why: str


def default_domain_type(uri: str) -> str | None:
    """The type the URI alone decides ("test" for libvirt's test driver), else None:
    then libvirt's capabilities decide, once connected (choose_domain_type)."""
    # The scheme may carry a transport: test+unix:///... is the test driver too.
    driver = uri.split(":", 1)[0].split("+", 1)[0]
    return "test" if driver == "test" else None


def is_local_uri(uri: str) -> bool:
    """Whether the hypervisor behind ``uri`` runs on this machine (and so uses its /dev/kvm)."""
    return urlsplit(uri).hostname in (None, "", "localhost", "127.0.0.1", "::1")


def choose_domain_type(
    capabilities_xml: str, *, local: bool, kvm_device: str = KVM_DEVICE
) -> DomainTypeChoice:
    """kvm if libvirt offers it for the host's architecture and (on this machine) QEMU's
    user can open the KVM device; else qemu (TCG) if offered; else None.

    ``capabilities_xml`` is libvirt's getCapabilities(): the guest domain types it can
    run per architecture, from the same probe of QEMU as the domain capabilities, and
    the user and group QEMU runs as (the DAC security label). libvirt offers kvm when
    the device exists even where QEMU's user cannot open it (a host without udev's rule
    has /dev/kvm root-only), and every kvm guest then fails to start ("Could not access
    KVM kernel module: Permission denied"); hence the check of the device itself.
    """
    caps = ET.fromstring(capabilities_xml)
    arch = caps.findtext("host/cpu/arch") or os.uname().machine
    offered = {
        str(domain.get("type"))
        for guest in caps.iterfind("guest")
        if guest.findtext("os_type") == "hvm"
        for domain in guest.iterfind(f"arch[@name='{arch}']/domain")
    }
    if "kvm" in offered:
        label = caps.findtext("host/secmodel[model='dac']/baselabel[@type='kvm']")
        kvm_problem = qemu_kvm_access_problem(label, kvm_device) if local else None
        if kvm_problem is None:
            return DomainTypeChoice("kvm", f"libvirt offers kvm guests for {arch}")
    else:
        kvm_problem = f"libvirt offers no kvm guests for {arch}"
    if "qemu" in offered:
        return DomainTypeChoice("qemu", f"{kvm_problem}: guests are emulated (TCG), far slower")
    return DomainTypeChoice(None, f"{kvm_problem}, nor qemu (TCG) guests")


def qemu_kvm_access_problem(dac_label: str | None, kvm_device: str = KVM_DEVICE) -> str | None:
    """Why QEMU, run as libvirt's DAC label ("+UID:+GID"), cannot open the KVM device
    read-write; None when it can, or when that cannot be told from here."""
    try:
        uid, gid = (int(part.lstrip("+")) for part in (dac_label or "").split(":"))
    except ValueError:
        return None
    try:
        device = os.stat(kvm_device)
    except FileNotFoundError:
        return f"{kvm_device} does not exist"
    except OSError:
        return None
    if uid == 0 or _has_acl(kvm_device):
        return None  # root opens it; an ACL decides beyond the mode bits
    # As libvirt sets them (virGetGroupList): the user's groups, with its primary group
    # from passwd (on Debian, libvirt-qemu's is kvm), plus the label's group.
    try:
        entry = pwd.getpwuid(uid)
        user, groups = entry.pw_name, {gid, *os.getgrouplist(entry.pw_name, entry.pw_gid)}
    except KeyError:
        user, groups = str(uid), {gid}
    if device.st_uid == uid:
        shift = 6
    elif device.st_gid in groups:
        shift = 3
    else:
        shift = 0
    if (device.st_mode >> shift) & 0o6 == 0o6:
        return None
    return (
        f"QEMU runs as {user} (groups {_group_names(groups)}), which cannot open {kvm_device} "
        f"({stat.filemode(device.st_mode)} {_user_name(device.st_uid)}:"
        f"{_group_names({device.st_gid})}); Debian's udev rule makes it root:kvm 0660 "
        "(on a host without it: scripts/setup-host.sh)"
    )


def _has_acl(path: str) -> bool:
    try:
        return "system.posix_acl_access" in os.listxattr(path)
    except OSError:
        return False


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _group_names(gids: set[int]) -> str:
    names = []
    for gid in sorted(gids):
        try:
            names.append(grp.getgrgid(gid).gr_name)
        except KeyError:
            names.append(str(gid))
    return ",".join(names)
