"""Host networking: floating addresses that follow the primary, behind one interface."""

from hypervisor.hostnet.base import FloatingAddress, HostNetwork, HostNetworkError
from hypervisor.hostnet.netlink import NetlinkHostNetwork

__all__ = ["FloatingAddress", "HostNetwork", "HostNetworkError", "NetlinkHostNetwork"]
