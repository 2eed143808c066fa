"""Turn a VirtualMachine spec into the hypervisor's DomainSpec."""

from __future__ import annotations

import hashlib
from pathlib import Path

from hypervisor import DiskSpec, DomainSpec, NicSpec
from schemas import Network, VirtualMachine, to_bytes, to_mib


def derived_mac(vm: str, index: int) -> str:
    """A stable locally-administered MAC (QEMU's 52:54:00 prefix) from the VM name and NIC index."""
    digest = hashlib.sha256(f"{vm}/{index}".encode()).digest()
    return "52:54:00:" + ":".join(f"{b:02x}" for b in digest[:3])


def bridge_for(network: Network) -> str:
    """Linux limits interface names to 15 characters, so bridges are named by number."""
    if network.spec.type == "managed":
        return f"vmbr{network.spec.vni}"
    return f"vmbr{network.spec.vlan or 0}"


def macs_of(vm: VirtualMachine) -> list[str]:
    return [nic.mac or derived_mac(vm.name, i) for i, nic in enumerate(vm.spec.nics)]


def domain_spec(
    vm: VirtualMachine, networks: dict[str, Network], disk_dir: str, owner_tag: str
) -> DomainSpec:
    """Raises KeyError naming a network the VM uses that does not exist."""
    disks = []
    for i, disk in enumerate(vm.spec.disks):
        path = disk.source or str(Path(disk_dir) / f"{vm.name}-{disk.name}.{disk.format}")
        disks.append(
            DiskSpec(
                target=f"vd{chr(ord('a') + i)}",
                path=path,
                format=disk.format,
                size_bytes=to_bytes(disk.size) if disk.size else None,
            )
        )
    nics = []
    for mac, nic in zip(macs_of(vm), vm.spec.nics, strict=True):
        if nic.network not in networks:
            raise KeyError(nic.network)
        nics.append(NicSpec(mac=mac, bridge=bridge_for(networks[nic.network]), model=nic.model))
    return DomainSpec(
        name=vm.name,
        uuid=vm.metadata.uid or "",
        vcpus=vm.spec.vcpus,
        memory_mib=to_mib(vm.spec.memory),
        disks=tuple(disks),
        nics=tuple(nics),
        owner_tag=owner_tag,
    )
