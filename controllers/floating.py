"""Floating addresses: the IPs that follow the primary coordinator.

The new primary adds them (and announces them with gratuitous ARP so
neighbours move their ARP entries at once) only after the old primary has
let go of them; the old primary removes them when it relinquishes, and at
once when its ZooKeeper session is lost, because another node may already
hold them.
"""

from __future__ import annotations

import logging
import threading
from typing import Protocol

from hypervisor.hostnet import FloatingAddress, HostNetwork, HostNetworkError

log = logging.getLogger(__name__)


class FloatingAddresses:
    def __init__(self, network: HostNetwork | None, addresses: list[FloatingAddress]) -> None:
        self.network = network
        self.addresses = list(addresses)
        self._lock = threading.Lock()

    def take(self) -> None:
        """Add every address, then announce them in the background; raises HostNetworkError
        (and then holds none) when one cannot be added."""
        if self.network is None or not self.addresses:
            return
        with self._lock:
            try:
                for fa in self.addresses:
                    added = self.network.add_address(fa)
                    log.info(
                        "event=floating_address_taken address=%s interface=%s added=%s",
                        fa.address,
                        fa.interface,
                        added,
                    )
            except HostNetworkError as exc:
                log.error("event=floating_address_failed error=%s", exc)
                self._remove_all()
                raise
        # The address works once added; the gratuitous ARP only hurries neighbours along,
        # so the takeover does not wait for it.
        threading.Thread(target=self._announce, name="announce", daemon=True).start()

    def _announce(self) -> None:
        assert self.network is not None
        for fa in self.addresses:
            try:
                self.network.announce(fa)
            except HostNetworkError as exc:
                log.warning("event=floating_address_announce_failed error=%s", exc)
                continue
            log.info("event=floating_address_announced address=%s", fa.address)

    def release(self) -> None:
        """Remove every address; never raises (a failure is logged and the rest still go)."""
        if self.network is None or not self.addresses:
            return
        with self._lock:
            self._remove_all()

    def _remove_all(self) -> None:
        assert self.network is not None
        for fa in self.addresses:
            try:
                removed = self.network.remove_address(fa)
            except HostNetworkError as exc:
                log.error("event=floating_address_release_failed error=%s", exc)
                continue
            if removed:
                log.info(
                    "event=floating_address_released address=%s interface=%s",
                    fa.address,
                    fa.interface,
                )

    def close(self) -> None:
        if self.network is not None:
            self.network.close()


class Held(Protocol):
    """What a primary holds on the host while it is primary (addresses, DHCP servers)."""

    def take(self) -> None: ...

    def release(self) -> None: ...

    def close(self) -> None: ...


class HeldGroup:
    """Several ``Held`` taken in order and released in the same order: the floating
    addresses first (a takeover fails without them; a primary losing ZooKeeper drops them
    at once, before anything slower such as a DHCP server's stop), then the networks'
    gateways."""

    def __init__(self, *parts: Held) -> None:
        self.parts = parts

    def take(self) -> None:
        try:
            for part in self.parts:
                part.take()
        except Exception:
            self.release()
            raise

    def release(self) -> None:
        for part in self.parts:
            part.release()

    def close(self) -> None:
        for part in reversed(self.parts):
            part.close()
