"""The host-bridges interface: one Linux bridge per PVC network on each host, with its uplink.

A network's bridge is what the VMs' taps join; its uplink port carries the network off the
host: a VXLAN tunnel (``vxlan<vni>``, head-end replication to the other hosts), a VLAN on a
physical device (``vlan<id>``), or, for ``kind="none"``, an existing device enslaved as it
is (or nothing: a network local to the host). PVC marks every link it makes with the alias
``pvc:network=<name>`` and only ever lists or removes links that carry a ``pvc:`` alias.
"""

from __future__ import annotations

import abc
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, Self

from hypervisor.hostnet.base import MAX_INTERFACE_NAME_BYTES

BridgeKind = Literal["vxlan", "vlan", "none"]
BRIDGE_KINDS: tuple[BridgeKind, ...] = ("vxlan", "vlan", "none")

# IFLA_IFALIAS of the links PVC makes: OWNER_ALIAS_PREFIX + "network=" + the network's name.
OWNER_ALIAS_PREFIX = "pvc:"
NETWORK_ALIAS_PREFIX = f"{OWNER_ALIAS_PREFIX}network="
# The kernel caps an interface alias at IFALIASZ - 1 bytes.
MAX_ALIAS_BYTES = 255

MAX_VNI = 2**24 - 1
MIN_VLAN, MAX_VLAN = 1, 4094
MIN_MTU, MAX_MTU = 68, 65535
DEFAULT_VXLAN_PORT = 4789
# What VXLAN adds to each frame: outer IP + UDP + VXLAN + inner Ethernet headers.
VXLAN_OVERHEAD_IPV4 = 50
VXLAN_OVERHEAD_IPV6 = 70


def owner_alias(network: str) -> str:
    """The alias PVC sets on the links it makes for ``network``."""
    return f"{NETWORK_ALIAS_PREFIX}{network}"


def network_of_alias(alias: str | None) -> str | None:
    """The network a PVC alias names; None for a link PVC did not make."""
    if alias is None or not alias.startswith(NETWORK_ALIAS_PREFIX):
        return None
    return alias.removeprefix(NETWORK_ALIAS_PREFIX)


def _check_interface_name(what: str, name: str) -> None:
    if not 0 < len(name.encode()) <= MAX_INTERFACE_NAME_BYTES:
        raise ValueError(f"{what} {name!r} must be 1 to {MAX_INTERFACE_NAME_BYTES} bytes long")
    if "/" in name or any(c.isspace() for c in name) or name in (".", ".."):
        raise ValueError(f"{what} {name!r} is not a valid interface name")


@dataclass(frozen=True)
class BridgeSpec:
    """One PVC network on one host: a bridge the VMs' taps join, and its uplink port.

    - ``kind="vxlan"``: uplink ``vxlan<vni>`` from ``local`` (this host's cluster address) to
      UDP ``port``, over ``device`` when given; ``mtu`` None means the underlay's MTU minus
      the VXLAN overhead (50 bytes over IPv4, 70 over IPv6).
    - ``kind="vlan"``: uplink ``vlan<vlan>`` on ``device``; ``mtu`` None leaves the kernel's.
    - ``kind="none"``: ``device``, when given, is enslaved as it is (PVC did not make it, so
      it keeps its MTU and is never deleted); ``mtu`` None leaves the kernel's.
    """

    network: str
    bridge: str
    kind: BridgeKind
    mtu: int | None = None
    vni: int | None = None
    local: str | None = None
    device: str | None = None
    vlan: int | None = None
    port: int = DEFAULT_VXLAN_PORT

    def __post_init__(self) -> None:
        longest = MAX_ALIAS_BYTES - len(NETWORK_ALIAS_PREFIX)
        if not 0 < len(self.network.encode()) <= longest:
            raise ValueError(f"network name {self.network!r} must be 1 to {longest} bytes long")
        _check_interface_name("bridge name", self.bridge)
        if self.kind not in BRIDGE_KINDS:
            raise ValueError(f"kind {self.kind!r} must be one of {', '.join(BRIDGE_KINDS)}")
        if self.mtu is not None and not MIN_MTU <= self.mtu <= MAX_MTU:
            raise ValueError(f"mtu {self.mtu} must be {MIN_MTU} to {MAX_MTU}")
        if self.device is not None:
            _check_interface_name("device name", self.device)
        if self.kind == "vxlan":
            if self.vni is None or not 1 <= self.vni <= MAX_VNI:
                raise ValueError(f"a vxlan network needs a vni of 1 to {MAX_VNI}, not {self.vni}")
            if self.local is None:
                raise ValueError("a vxlan network needs local, this host's cluster address")
            ipaddress.ip_address(self.local)  # raises ValueError, naming the address
            if not 1 <= self.port <= 65535:
                raise ValueError(f"vxlan port {self.port} must be 1 to 65535")
        elif self.kind == "vlan":
            if self.vlan is None or not MIN_VLAN <= self.vlan <= MAX_VLAN:
                raise ValueError(
                    f"a vlan network needs a vlan id of {MIN_VLAN} to {MAX_VLAN}, not {self.vlan}"
                )
            if self.device is None:
                raise ValueError("a vlan network needs device, the link the VLAN sits on")
        if self.uplink == self.bridge:
            raise ValueError(f"bridge {self.bridge!r} cannot be its own uplink")

    @property
    def uplink(self) -> str | None:
        """The bridge's uplink port: ``vxlan<vni>``, ``vlan<vlan>``, the device of a
        ``none`` network, or None."""
        if self.kind == "vxlan":
            return f"vxlan{self.vni}"
        if self.kind == "vlan":
            return f"vlan{self.vlan}"
        return self.device

    @property
    def alias(self) -> str:
        """The alias PVC sets on the bridge and on the uplink it makes."""
        return owner_alias(self.network)


@dataclass(frozen=True)
class BridgeState:
    """A bridge PVC made, as the kernel holds it."""

    network: str
    bridge: str
    up: bool
    mtu: int
    ports: tuple[str, ...]  # names of the links enslaved to the bridge, sorted
    peers: tuple[str, ...]  # vxlan: the FDB flood destinations, sorted; else ()


class HostBridges(abc.ABC):
    """The bridges of PVC's networks on this host. Every call is thread-safe and has a
    deadline; each raises HostNetworkError, never a backend's own exception type."""

    @abc.abstractmethod
    def ensure(self, spec: BridgeSpec) -> bool:
        """Create or correct the bridge (up, MTU, STP off, forward delay 0) and its uplink
        (enslaved, up, same MTU); True if anything changed. A changed vni, vlan, local,
        port or device recreates the uplink (a new vxlan has an empty FDB: call set_peers
        again after a True). A failed ensure removes what it created."""

    @abc.abstractmethod
    def set_peers(self, spec: BridgeSpec, peers: Iterable[str]) -> bool:
        """vxlan only: make the FDB of ``vxlan<vni>`` hold exactly one all-zeros-MAC entry
        per peer address (head-end replication), never ``spec.local``; True if changed."""

    @abc.abstractmethod
    def remove(self, bridge: str) -> bool:
        """Remove the bridge and the uplink PVC made for it; False if absent. Links PVC did
        not make (a device of a ``none`` network, libvirt's taps) are released, not deleted.
        Raises HostNetworkError for a bridge PVC did not make."""

    @abc.abstractmethod
    def list(self) -> dict[str, BridgeState]:
        """Every bridge PVC made on this host, by bridge name."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the backend's resources; safe to call twice."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
