"""pvc/v1 resource types: validation, defaults, conditions, manifest loading.

Names are imported from their module when first used (PEP 562), not all at once with the
package: ``from schemas.quantity import to_bytes`` or ``from schemas import to_bytes`` loads
that module (and what it needs) only, not every kind's pydantic models; pvcctl's start and
its tables need none of them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from schemas.cluster import CLUSTER_NAME, Cluster, ClusterSpec, ClusterStatus, FencingConfig
    from schemas.errors import FieldError, InvalidResource, ManifestError
    from schemas.loader import LoadedObject, load_manifests
    from schemas.meta import (
        API_VERSION,
        Condition,
        ConditionStatus,
        ObjectMeta,
        Status,
        condition_is_true,
        get_condition,
        set_condition,
        utcnow,
    )
    from schemas.network import (
        DhcpLease,
        Network,
        NetworkSpec,
        NetworkStatus,
        bridge_name,
        network_number,
    )
    from schemas.node import (
        GONE_STATES,
        DaemonState,
        DomainState,
        FenceConfig,
        Node,
        NodeNetwork,
        NodePool,
        NodeResources,
        NodeSpec,
        NodeStatus,
        RouterState,
    )
    from schemas.quantity import approx_bytes, format_bytes, to_bytes, to_mib, to_seconds
    from schemas.registry import KINDS, kind_by_name, kind_by_plural, kind_for, parse_resource
    from schemas.resource import Resource
    from schemas.storage import (
        PoolNodeState,
        PoolType,
        RbdConfig,
        StoragePool,
        StoragePoolSpec,
        StoragePoolStatus,
    )
    from schemas.vm import (
        Disk,
        MigrationMethod,
        MigrationState,
        MigrationStatus,
        Nic,
        Placement,
        PlacementPolicy,
        RunStrategy,
        VirtualMachine,
        VirtualMachineSpec,
        VirtualMachineStatus,
        VMPhase,
        VolumeStatus,
    )

_WHERE: dict[str, str] = {
    "API_VERSION": "schemas.meta",
    "CLUSTER_NAME": "schemas.cluster",
    "Cluster": "schemas.cluster",
    "ClusterSpec": "schemas.cluster",
    "ClusterStatus": "schemas.cluster",
    "Condition": "schemas.meta",
    "ConditionStatus": "schemas.meta",
    "DaemonState": "schemas.node",
    "DhcpLease": "schemas.network",
    "Disk": "schemas.vm",
    "DomainState": "schemas.node",
    "FenceConfig": "schemas.node",
    "FencingConfig": "schemas.cluster",
    "FieldError": "schemas.errors",
    "GONE_STATES": "schemas.node",
    "InvalidResource": "schemas.errors",
    "KINDS": "schemas.registry",
    "LoadedObject": "schemas.loader",
    "ManifestError": "schemas.errors",
    "MigrationMethod": "schemas.vm",
    "MigrationState": "schemas.vm",
    "MigrationStatus": "schemas.vm",
    "Network": "schemas.network",
    "NetworkSpec": "schemas.network",
    "NetworkStatus": "schemas.network",
    "Nic": "schemas.vm",
    "Node": "schemas.node",
    "NodeNetwork": "schemas.node",
    "NodePool": "schemas.node",
    "NodeResources": "schemas.node",
    "NodeSpec": "schemas.node",
    "NodeStatus": "schemas.node",
    "ObjectMeta": "schemas.meta",
    "Placement": "schemas.vm",
    "PlacementPolicy": "schemas.vm",
    "PoolNodeState": "schemas.storage",
    "PoolType": "schemas.storage",
    "RbdConfig": "schemas.storage",
    "Resource": "schemas.resource",
    "RouterState": "schemas.node",
    "RunStrategy": "schemas.vm",
    "Status": "schemas.meta",
    "StoragePool": "schemas.storage",
    "StoragePoolSpec": "schemas.storage",
    "StoragePoolStatus": "schemas.storage",
    "VMPhase": "schemas.vm",
    "VirtualMachine": "schemas.vm",
    "VirtualMachineSpec": "schemas.vm",
    "VirtualMachineStatus": "schemas.vm",
    "VolumeStatus": "schemas.vm",
    "approx_bytes": "schemas.quantity",
    "bridge_name": "schemas.network",
    "condition_is_true": "schemas.meta",
    "format_bytes": "schemas.quantity",
    "get_condition": "schemas.meta",
    "kind_by_name": "schemas.registry",
    "kind_by_plural": "schemas.registry",
    "kind_for": "schemas.registry",
    "load_manifests": "schemas.loader",
    "network_number": "schemas.network",
    "parse_resource": "schemas.registry",
    "set_condition": "schemas.meta",
    "to_bytes": "schemas.quantity",
    "to_mib": "schemas.quantity",
    "to_seconds": "schemas.quantity",
    "utcnow": "schemas.meta",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'schemas' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_WHERE])


__all__ = [
    "API_VERSION",
    "CLUSTER_NAME",
    "GONE_STATES",
    "KINDS",
    "Cluster",
    "ClusterSpec",
    "ClusterStatus",
    "Condition",
    "ConditionStatus",
    "DaemonState",
    "DhcpLease",
    "Disk",
    "DomainState",
    "FenceConfig",
    "FencingConfig",
    "FieldError",
    "InvalidResource",
    "LoadedObject",
    "ManifestError",
    "MigrationMethod",
    "MigrationState",
    "MigrationStatus",
    "Network",
    "NetworkSpec",
    "NetworkStatus",
    "Nic",
    "Node",
    "NodeNetwork",
    "NodePool",
    "NodeResources",
    "NodeSpec",
    "NodeStatus",
    "ObjectMeta",
    "Placement",
    "PlacementPolicy",
    "PoolNodeState",
    "PoolType",
    "RbdConfig",
    "Resource",
    "RouterState",
    "RunStrategy",
    "Status",
    "StoragePool",
    "StoragePoolSpec",
    "StoragePoolStatus",
    "VMPhase",
    "VirtualMachine",
    "VirtualMachineSpec",
    "VirtualMachineStatus",
    "VolumeStatus",
    "approx_bytes",
    "bridge_name",
    "condition_is_true",
    "format_bytes",
    "get_condition",
    "kind_by_name",
    "kind_by_plural",
    "kind_for",
    "load_manifests",
    "network_number",
    "parse_resource",
    "set_condition",
    "to_bytes",
    "to_mib",
    "to_seconds",
    "utcnow",
]
