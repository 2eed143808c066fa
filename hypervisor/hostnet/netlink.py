"""Floating addresses through netlink (pyroute2), announced with gratuitous ARP (garp.py:
either arping, or a raw socket).

A floating address follows the primary coordinator, so that clients reach the cluster at
one address whichever node is primary. The primary adds it in takeover and announces it
with gratuitous ARP, so neighbours repoint their cached entry at the new owner at once
instead of when it expires; the primary removes it in relinquish (and when it loses its
ZooKeeper session), before another node may take it.

Netlink calls run in one thread that owns the pyroute2 socket (_netlink_thread.py), which
makes them thread-safe, and each caller waits with a deadline.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import socket
from collections.abc import Callable
from typing import Any, TypeVar

from pyroute2.netlink.exceptions import NetlinkError

from hypervisor.hostnet import garp
from hypervisor.hostnet._netlink_thread import NetlinkThread, describe_namespace, link_index
from hypervisor.hostnet.base import FloatingAddress, HostNetwork, HostNetworkError

log = logging.getLogger(__name__)

T = TypeVar("T")

# Defaults of NetlinkHostNetwork's keyword arguments; the daemon passes its config's values.
DEFAULT_NETLINK_TIMEOUT = 5.0
DEFAULT_ANNOUNCE_COUNT = 2
DEFAULT_ANNOUNCE_INTERVAL = 1.0  # both arpings' own default
DEFAULT_ANNOUNCE_TIMEOUT = 5.0

# Add IPv6 floating addresses without duplicate address detection, as keepalived does: the
# address moves on purpose, after the old owner let go of it, and DAD would hold it
# tentative (unusable) for a second or more after every takeover.
IFA_F_NODAD = 0x02


class NetlinkHostNetwork(HostNetwork):
    """Floating addresses in the host's own network namespace (``netns=None``) or in a
    named one (``ip netns`` name), which must exist."""

    def __init__(
        self,
        netns: str | None = None,
        *,
        timeout: float = DEFAULT_NETLINK_TIMEOUT,
        announce_count: int = DEFAULT_ANNOUNCE_COUNT,
        announce_interval: float = DEFAULT_ANNOUNCE_INTERVAL,
        announce_timeout: float = DEFAULT_ANNOUNCE_TIMEOUT,
        announce_method: garp.Method = garp.Method.AUTO,
    ) -> None:
        if announce_count < 1:
            raise ValueError("announce_count must be at least 1")
        # Habets' arping waits one interval after each request, the last one included.
        if announce_timeout <= announce_count * announce_interval:
            raise ValueError(
                f"announce_timeout ({announce_timeout:g}s) must exceed announce_count * "
                f"announce_interval ({announce_count * announce_interval:g}s)"
            )
        self.netns = netns
        self.announce_count = announce_count
        self.announce_interval = announce_interval
        self.announce_timeout = announce_timeout
        self.announce_method = announce_method
        self._where = describe_namespace(netns)
        self._netlink = NetlinkThread(netns, timeout, self._where)

    def _describe(self, fa: FloatingAddress) -> str:
        return f"{fa.address} on {fa.interface} in {self._where}"

    def _call(self, function: Callable[[Any], T], what: str) -> T:
        return self._netlink.run(function, what)

    def has_address(self, fa: FloatingAddress) -> bool:
        def has(ipr: Any) -> bool:
            index = link_index(ipr, fa.interface)
            return index is not None and _holds(ipr, index, fa)

        return self._call(has, f"cannot check {self._describe(fa)}")

    def add_address(self, fa: FloatingAddress) -> bool:
        what = f"cannot add {self._describe(fa)}"

        def add(ipr: Any) -> bool:
            index = link_index(ipr, fa.interface)
            if index is None:
                raise HostNetworkError(f"{what}: interface {fa.interface} does not exist")
            if _holds(ipr, index, fa):
                return False
            flags = IFA_F_NODAD if fa.version == 6 else 0
            try:
                ipr.addr("add", index=index, address=fa.ip, prefixlen=fa.prefixlen, flags=flags)
            except NetlinkError as exc:
                if exc.code == errno.EEXIST:
                    if _holds(ipr, index, fa):
                        return False  # added by someone else since we looked
                    raise HostNetworkError(
                        f"{what}: the interface holds {fa.ip} with another prefix length"
                    ) from exc
                if exc.code == errno.ENODEV:
                    raise HostNetworkError(
                        f"{what}: interface {fa.interface} does not exist"
                    ) from exc
                raise
            return True

        added = self._call(add, what)
        log.debug(
            "event=address_add interface=%s address=%s netns=%s added=%s",
            fa.interface,
            fa.address,
            self.netns,
            added,
        )
        return added

    def remove_address(self, fa: FloatingAddress) -> bool:
        def remove(ipr: Any) -> bool:
            index = link_index(ipr, fa.interface)
            if index is None:
                return False
            try:
                ipr.addr("del", index=index, address=fa.ip, prefixlen=fa.prefixlen)
            except NetlinkError as exc:
                if exc.code in (errno.EADDRNOTAVAIL, errno.ENODEV):
                    return False
                raise
            return True

        removed = self._call(remove, f"cannot remove {self._describe(fa)}")
        log.debug(
            "event=address_remove interface=%s address=%s netns=%s removed=%s",
            fa.interface,
            fa.address,
            self.netns,
            removed,
        )
        return removed

    def announce(self, fa: FloatingAddress) -> None:
        if fa.version == 6:
            # Neighbours learn a moved IPv6 address from their own neighbour discovery.
            log.debug(
                "event=announce_skipped reason=ipv6 interface=%s address=%s netns=%s",
                fa.interface,
                fa.address,
                self.netns,
            )
            return
        try:
            method = garp.announce(
                fa.interface,
                fa.ip,
                count=self.announce_count,
                interval=self.announce_interval,
                timeout=self.announce_timeout,
                netns=self.netns,
                method=self.announce_method,
            )
        except HostNetworkError as exc:
            raise HostNetworkError(f"cannot announce {self._describe(fa)}: {exc}") from None
        log.debug(
            "event=address_announced interface=%s address=%s netns=%s count=%d method=%s",
            fa.interface,
            fa.address,
            self.netns,
            self.announce_count,
            method,
        )

    def close(self) -> None:
        self._netlink.close()


def _holds(ipr: Any, index: int, fa: FloatingAddress) -> bool:
    family = socket.AF_INET6 if fa.version == 6 else socket.AF_INET
    wanted = ipaddress.ip_address(fa.ip)
    for msg in ipr.addr("dump", index=index, family=family):
        # IFA_LOCAL is the address itself; on point-to-point links IFA_ADDRESS is the peer.
        held = msg.get_attr("IFA_LOCAL") or msg.get_attr("IFA_ADDRESS")
        if held and msg["prefixlen"] == fa.prefixlen and ipaddress.ip_address(held) == wanted:
            return True
    return False
