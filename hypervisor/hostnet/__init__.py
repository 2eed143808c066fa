"""Host networking: floating addresses that follow the primary, behind one interface."""

from hypervisor.hostnet.base import FloatingAddress, HostNetwork, HostNetworkError
from hypervisor.hostnet.bridges import BridgeSpec, BridgeState, HostBridges
from hypervisor.hostnet.netlink import NetlinkHostNetwork
from hypervisor.hostnet.netlink_bridges import NetlinkHostBridges, vlan_supported

__all__ = ["FloatingAddress", "HostNetwork", "HostNetworkError", "NetlinkHostNetwork"]
# The bridges of PVC's networks, one per network on each host.
__all__ += ["BridgeSpec", "BridgeState", "HostBridges", "NetlinkHostBridges", "vlan_supported"]
