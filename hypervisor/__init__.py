"""Host-side drivers. Nothing here knows of ZooKeeper.

Controllers code against DomainDriver; LibvirtDriver is the implementation,
on QEMU/KVM or on libvirt's test driver (see write_test_host_xml).
"""

from hypervisor.domain import (
    ConsoleTail,
    DiskSpec,
    DomainDriver,
    DomainInfo,
    DomainSpec,
    DomainState,
    HostFacts,
    LifecycleCallback,
    MigrationProgress,
    MigrationTarget,
    NicSpec,
    StopReason,
)
from hypervisor.domainxml import (
    PVC_METADATA_NS,
    find_owner_tag,
    read_owner_tag,
    render_domain_xml,
)
from hypervisor.errors import (
    DomainNotFound,
    HypervisorError,
    HypervisorUnavailable,
    InvalidDomain,
    MigrationFailed,
    MigrationUnsupported,
    OperationFailed,
)
from hypervisor.faulty import (
    FaultyDriver,
    HypervisorWorld,
    SimulatedPowerAgent,
    Timings,
    Transition,
    Violation,
)
from hypervisor.libvirt_driver import LibvirtDriver
from hypervisor.testdriver import write_test_host_xml

__all__ = [
    "PVC_METADATA_NS",
    "ConsoleTail",
    "DiskSpec",
    "DomainDriver",
    "DomainInfo",
    "DomainNotFound",
    "DomainSpec",
    "DomainState",
    "FaultyDriver",
    "HostFacts",
    "HypervisorError",
    "HypervisorUnavailable",
    "HypervisorWorld",
    "InvalidDomain",
    "LibvirtDriver",
    "LifecycleCallback",
    "MigrationFailed",
    "MigrationProgress",
    "MigrationTarget",
    "MigrationUnsupported",
    "NicSpec",
    "OperationFailed",
    "SimulatedPowerAgent",
    "StopReason",
    "Timings",
    "Transition",
    "Violation",
    "find_owner_tag",
    "read_owner_tag",
    "render_domain_xml",
    "write_test_host_xml",
]
