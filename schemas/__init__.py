"""pvc/v1 resource types: validation, defaults, conditions, manifest loading."""

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
from schemas.network import Network, NetworkSpec, NetworkStatus
from schemas.node import (
    DaemonState,
    DomainState,
    FenceConfig,
    Node,
    NodeResources,
    NodeSpec,
    NodeStatus,
    RouterState,
)
from schemas.quantity import format_bytes, to_bytes, to_mib, to_seconds
from schemas.registry import KINDS, kind_by_name, kind_by_plural, kind_for, parse_resource
from schemas.resource import Resource
from schemas.vm import (
    Disk,
    Nic,
    Placement,
    PlacementPolicy,
    RunStrategy,
    VirtualMachine,
    VirtualMachineSpec,
    VirtualMachineStatus,
    VMPhase,
)

__all__ = [
    "API_VERSION",
    "CLUSTER_NAME",
    "KINDS",
    "Cluster",
    "ClusterSpec",
    "ClusterStatus",
    "Condition",
    "ConditionStatus",
    "DaemonState",
    "Disk",
    "DomainState",
    "FenceConfig",
    "FencingConfig",
    "FieldError",
    "InvalidResource",
    "LoadedObject",
    "ManifestError",
    "Network",
    "NetworkSpec",
    "NetworkStatus",
    "Nic",
    "Node",
    "NodeResources",
    "NodeSpec",
    "NodeStatus",
    "ObjectMeta",
    "Placement",
    "PlacementPolicy",
    "Resource",
    "RouterState",
    "RunStrategy",
    "Status",
    "VMPhase",
    "VirtualMachine",
    "VirtualMachineSpec",
    "VirtualMachineStatus",
    "condition_is_true",
    "format_bytes",
    "get_condition",
    "kind_by_name",
    "kind_by_plural",
    "kind_for",
    "load_manifests",
    "parse_resource",
    "set_condition",
    "to_bytes",
    "to_mib",
    "to_seconds",
    "utcnow",
]
