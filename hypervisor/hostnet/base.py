"""The host-network interface: take, release and announce a floating address."""

from __future__ import annotations

import abc
import ipaddress
from dataclasses import dataclass
from types import TracebackType
from typing import Self

# Linux interface names are at most IFNAMSIZ - 1 bytes.
MAX_INTERFACE_NAME_BYTES = 15


@dataclass(frozen=True)
class FloatingAddress:
    """An address in CIDR form (IPv4 or IPv6) on a named interface, e.g. 10.200.0.254/24
    on pvcbr0. The prefix length is required: it decides the on-link route that comes with
    the address, so a silent /32 default would be a different network."""

    interface: str
    address: str

    def __post_init__(self) -> None:
        name_bytes = len(self.interface.encode())
        if not 0 < name_bytes <= MAX_INTERFACE_NAME_BYTES:
            raise ValueError(
                f"interface name {self.interface!r} must be 1 to "
                f"{MAX_INTERFACE_NAME_BYTES} bytes long"
            )
        if "/" not in self.address:
            raise ValueError(f"floating address {self.address!r} needs a prefix length (CIDR)")
        ipaddress.ip_interface(self.address)  # raises ValueError, naming the address

    @property
    def _parsed(self) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface:
        return ipaddress.ip_interface(self.address)

    @property
    def ip(self) -> str:
        """The address without its prefix length, in canonical form (IPv6 compressed)."""
        return str(self._parsed.ip)

    @property
    def prefixlen(self) -> int:
        return self._parsed.network.prefixlen

    @property
    def version(self) -> int:
        """4 or 6."""
        return self._parsed.version

    def __str__(self) -> str:
        return f"{self.address} on {self.interface}"


class HostNetworkError(Exception):
    """Any failure of a host-network call. The message names the interface, the address
    and the network namespace, when there is one."""


class HostNetwork(abc.ABC):
    """Floating addresses on this host. Every call is idempotent, thread-safe and has a
    deadline; each raises HostNetworkError, never a backend's own exception type."""

    @abc.abstractmethod
    def add_address(self, fa: FloatingAddress) -> bool:
        """Add the address; True when added, False when it was already there. Raises
        HostNetworkError when it cannot be added, e.g. the interface does not exist."""

    @abc.abstractmethod
    def remove_address(self, fa: FloatingAddress) -> bool:
        """Remove the address; True when removed, False when it was absent (also when the
        interface does not exist)."""

    @abc.abstractmethod
    def has_address(self, fa: FloatingAddress) -> bool:
        """Whether the interface holds this address with this prefix length."""

    @abc.abstractmethod
    def announce(self, fa: FloatingAddress) -> None:
        """Tell the neighbours the address has moved here: gratuitous ARP for IPv4, nothing
        for IPv6. Raises HostNetworkError when the announcement was not sent."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the backend's resources; safe to call twice."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
