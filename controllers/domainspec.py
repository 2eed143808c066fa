"""Turn a VirtualMachine spec into the hypervisor's DomainSpec."""

from __future__ import annotations

from pathlib import Path

from hypervisor import DiskSpec, DomainSpec, NicSpec
from hypervisor.storage import DiskSource, FileSource, RbdSource
from schemas import Network, RunStrategy, VirtualMachine, bridge_name, to_bytes, to_mib
from schemas.vm import derived_mac


def bridge_for(network: Network) -> str:
    """Linux limits interface names to 15 characters, so bridges are named by number."""
    return bridge_name(network.spec)


def macs_of(vm: VirtualMachine) -> list[str]:
    return [nic.mac or derived_mac(vm.name, i) for i, nic in enumerate(vm.spec.nics)]


def disk_target(index: int) -> str:
    return f"vd{chr(ord('a') + index)}"


def domain_spec(
    vm: VirtualMachine,
    networks: dict[str, Network],
    disk_dir: str,
    owner_tag: str,
    volumes: dict[str, DiskSource] | None = None,
) -> DomainSpec:
    """Raises KeyError naming a network the VM uses that does not exist. ``volumes``: where
    each disk in a storage pool is on this node (controllers/vm_disks.py)."""
    disks = []
    for i, disk in enumerate(vm.spec.disks):
        found = (volumes or {}).get(disk.name) if disk.pool is not None else None
        if isinstance(found, RbdSource):
            disks.append(
                DiskSpec(target=disk_target(i), path=found.image, format=found.format, rbd=found)
            )
            continue
        if isinstance(found, FileSource):
            disks.append(DiskSpec(target=disk_target(i), path=found.path, format=found.format))
            continue
        fmt = disk.format or "qcow2"
        path = disk.source or str(Path(disk_dir) / f"{vm.name}-{disk.name}.{fmt}")
        disks.append(
            DiskSpec(
                target=disk_target(i),
                path=path,
                format=fmt,
                size_bytes=to_bytes(disk.size) if disk.size and disk.pool is None else None,
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


def allocations_of(vms: list[VirtualMachine]) -> tuple[int, int, int, int]:
    """(memory allocated, memory provisioned, vCPUs allocated, running VMs) of ``vms``: a
    halted VM is provisioned, not allocated."""
    allocated = provisioned = vcpus = count = 0
    for vm in vms:
        memory = to_bytes(vm.spec.memory)
        provisioned += memory
        if vm.spec.run_strategy != RunStrategy.HALTED:
            allocated += memory
            vcpus += vm.spec.vcpus
            count += 1
    return allocated, provisioned, vcpus, count
