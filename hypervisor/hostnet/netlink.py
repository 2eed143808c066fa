"""Floating addresses through netlink (pyroute2), announced with arping.

A floating address follows the primary coordinator, so that clients reach the cluster at
one address whichever node is primary. The primary adds it in takeover and announces it
with gratuitous ARP, so neighbours repoint their cached entry at the new owner at once
instead of when it expires; the primary removes it in relinquish (and when it loses its
ZooKeeper session), before another node may take it.

Netlink calls run in one thread that owns the pyroute2 socket. pyroute2 0.9 keeps its
socket and asyncio loop per calling thread, so a socket shared under a lock would still
open one more socket per caller thread (and, inside a namespace, fork a child to create
it) and leave them to close(). The owner thread serialises the calls, which makes them
thread-safe, and each caller waits with a deadline.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import queue
import re
import socket
import subprocess
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from hypervisor.hostnet.base import FloatingAddress, HostNetwork, HostNetworkError

log = logging.getLogger(__name__)

T = TypeVar("T")

# Defaults of NetlinkHostNetwork's keyword arguments; the daemon passes its config's values.
DEFAULT_NETLINK_TIMEOUT = 5.0
DEFAULT_ANNOUNCE_COUNT = 2
DEFAULT_ANNOUNCE_INTERVAL = 1.0  # arping's own default
DEFAULT_ANNOUNCE_TIMEOUT = 5.0

# Add IPv6 floating addresses without duplicate address detection, as keepalived does: the
# address moves on purpose, after the old owner let go of it, and DAD would hold it
# tentative (unusable) for a second or more after every takeover.
IFA_F_NODAD = 0x02

# arping (Thomas Habets' arping 2.x, Debian's `arping` package) exits 1 when nobody answers,
# which is the normal outcome of a gratuitous ARP, and also exits 1 on real errors. The
# statistics line tells the two apart.
ARPING_SENT = re.compile(r"^(\d+) packets transmitted", re.MULTILINE)

_Call = tuple[Callable[[Any], Any], "Future[Any]"]


class _NetlinkThread:
    """One thread that owns an IPRoute socket and runs the calls handed to it, in order."""

    def __init__(self, netns: str | None, timeout: float, where: str) -> None:
        self._timeout = timeout
        self._where = where
        self._calls: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._lock = threading.Lock()  # guards _closed against a close() racing a call()
        self._closed = False
        opened: Future[None] = Future()
        self._thread = threading.Thread(
            target=self._run,
            args=(netns, opened),
            name=f"hostnet-{netns or 'host'}",
            daemon=True,  # a netlink call stuck in the kernel must not block the exit
        )
        self._thread.start()
        try:
            opened.result(timeout=timeout)
        except TimeoutError:
            self.close()
            raise HostNetworkError(f"no netlink socket in {where} within {timeout:g}s") from None
        except FileNotFoundError:
            raise HostNetworkError(f"{where} does not exist") from None
        except OSError as exc:
            raise HostNetworkError(f"cannot open a netlink socket in {where}: {exc}") from exc

    @staticmethod
    def _open(netns: str | None) -> Any:
        if netns is None:
            return IPRoute()
        # flags=0: a missing namespace is an error; pyroute2's default (O_CREAT) makes one.
        return IPRoute(netns=netns, flags=0)

    def _run(self, netns: str | None, opened: Future[None]) -> None:
        try:
            ipr = self._open(netns)
        except Exception as exc:
            opened.set_exception(exc)
            return
        opened.set_result(None)
        try:
            while (call := self._calls.get()) is not None:
                function, future = call
                if not future.set_running_or_notify_cancel():
                    continue  # its caller gave up waiting before it started
                try:
                    future.set_result(function(ipr))
                except Exception as exc:
                    future.set_exception(exc)
        finally:
            ipr.close()

    def call(self, function: Callable[[Any], T], what: str) -> T:
        """Run ``function(ipr)`` in the owner thread; raise HostNetworkError at the deadline.

        ``function``'s own exceptions reach the caller unchanged."""
        future: Future[T] = Future()
        with self._lock:
            if self._closed:
                raise HostNetworkError(f"{what}: the host network of {self._where} is closed")
            self._calls.put((function, future))
        try:
            return future.result(timeout=self._timeout)
        except TimeoutError:
            future.cancel()  # skipped if still queued; a call already running cannot stop
            raise HostNetworkError(
                f"{what}: no answer from netlink within {self._timeout:g}s"
            ) from None

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._calls.put(None)
        self._thread.join(timeout=self._timeout)
        if self._thread.is_alive():
            log.warning("event=hostnet_close_timeout where=%r", self._where)


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
    ) -> None:
        if announce_count < 1:
            raise ValueError("announce_count must be at least 1")
        # arping waits one interval after each request, the last one included.
        if announce_timeout <= announce_count * announce_interval:
            raise ValueError(
                f"announce_timeout ({announce_timeout:g}s) must exceed announce_count * "
                f"announce_interval ({announce_count * announce_interval:g}s)"
            )
        self.netns = netns
        self.announce_count = announce_count
        self.announce_interval = announce_interval
        self.announce_timeout = announce_timeout
        self._where = "the host namespace" if netns is None else f"netns {netns}"
        self._netlink = _NetlinkThread(netns, timeout, self._where)

    def _describe(self, fa: FloatingAddress) -> str:
        return f"{fa.address} on {fa.interface} in {self._where}"

    def _call(self, function: Callable[[Any], T], what: str) -> T:
        try:
            return self._netlink.call(function, what)
        except (NetlinkError, OSError) as exc:
            raise HostNetworkError(f"{what}: {exc}") from exc

    def has_address(self, fa: FloatingAddress) -> bool:
        def has(ipr: Any) -> bool:
            index = _link_index(ipr, fa.interface)
            return index is not None and _holds(ipr, index, fa)

        return self._call(has, f"cannot check {self._describe(fa)}")

    def add_address(self, fa: FloatingAddress) -> bool:
        what = f"cannot add {self._describe(fa)}"

        def add(ipr: Any) -> bool:
            index = _link_index(ipr, fa.interface)
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
            index = _link_index(ipr, fa.interface)
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
        what = f"cannot announce {self._describe(fa)}"
        argv = [
            "arping",
            "-U",
            "-c",
            str(self.announce_count),
            "-W",
            f"{self.announce_interval:g}",
            "-i",
            fa.interface,
            "-S",
            fa.ip,
            fa.ip,
        ]
        if self.netns is not None:
            argv = ["ip", "netns", "exec", self.netns, *argv]
        try:
            result = subprocess.run(
                argv, capture_output=True, text=True, timeout=self.announce_timeout
            )
        except FileNotFoundError as exc:
            raise HostNetworkError(f"{what}: {exc.filename} is not installed") from None
        except subprocess.TimeoutExpired:
            raise HostNetworkError(
                f"{what}: arping did not finish within {self.announce_timeout:g}s"
            ) from None
        sent = ARPING_SENT.search(result.stdout)
        if sent is None or int(sent.group(1)) < self.announce_count:
            lines = (result.stderr or result.stdout).strip().splitlines()
            raise HostNetworkError(
                f"{what}: arping exited {result.returncode}" + (f": {lines[-1]}" if lines else "")
            )
        log.debug(
            "event=address_announced interface=%s address=%s netns=%s count=%d",
            fa.interface,
            fa.address,
            self.netns,
            self.announce_count,
        )

    def close(self) -> None:
        self._netlink.close()


def _link_index(ipr: Any, interface: str) -> int | None:
    found = ipr.link_lookup(ifname=interface)
    return int(found[0]) if found else None


def _holds(ipr: Any, index: int, fa: FloatingAddress) -> bool:
    family = socket.AF_INET6 if fa.version == 6 else socket.AF_INET
    wanted = ipaddress.ip_address(fa.ip)
    for msg in ipr.addr("dump", index=index, family=family):
        # IFA_LOCAL is the address itself; on point-to-point links IFA_ADDRESS is the peer.
        held = msg.get_attr("IFA_LOCAL") or msg.get_attr("IFA_ADDRESS")
        if held and msg["prefixlen"] == fa.prefixlen and ipaddress.ip_address(held) == wanted:
            return True
    return False
