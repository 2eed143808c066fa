"""The thread that owns a pyroute2 socket, shared by the netlink host-network backends.

pyroute2 0.9 keeps its socket and asyncio loop per calling thread, so a socket shared under
a lock would still open one more socket per caller thread (and, inside a namespace, fork a
child to create it) and leave them to close(). The owner thread serialises the calls, which
makes them thread-safe, and each caller waits with a deadline.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from hypervisor.hostnet.base import HostNetworkError

log = logging.getLogger(__name__)

T = TypeVar("T")

_Call = tuple[Callable[[Any], Any], "Future[Any]"]


class NetlinkThread:
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

    def run(self, function: Callable[[Any], T], what: str) -> T:
        """``call``, with pyroute2's and the kernel's errors raised as HostNetworkError
        whose message starts with ``what``."""
        try:
            return self.call(function, what)
        except (NetlinkError, OSError) as exc:
            raise HostNetworkError(f"{what}: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._calls.put(None)
        self._thread.join(timeout=self._timeout)
        if self._thread.is_alive():
            log.warning("event=hostnet_close_timeout where=%r", self._where)


def describe_namespace(netns: str | None) -> str:
    """How error messages name a namespace: "the host namespace" or "netns <name>"."""
    return "the host namespace" if netns is None else f"netns {netns}"


def link_index(ipr: Any, interface: str) -> int | None:
    found = ipr.link_lookup(ifname=interface)
    return int(found[0]) if found else None
