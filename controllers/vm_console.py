"""The node's side of ``pvcctl vm logs`` and ``vm dumpxml``: the serial console output of the
VMs placed here, published to the store at most every ``interval`` while it changes (the
newest CONSOLE_LIMIT bytes), and each domain's XML as this node defined it."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable

from kazoo.exceptions import KazooException

from hypervisor import DomainDriver, HypervisorError
from zkstore import Store
from zkstore.console import CONSOLE_LIMIT, VMOutputs

log = logging.getLogger(__name__)

CONSOLE_INTERVAL = 1.0
"""Seconds between looks at the consoles of the VMs placed on this node."""


class ConsolePublisher:
    def __init__(
        self,
        store: Store,
        driver: DomainDriver,
        node: str,
        placed_here: Callable[[], Iterable[str]],
        *,
        interval: float = CONSOLE_INTERVAL,
        limit: int = CONSOLE_LIMIT,
    ) -> None:
        self.outputs = VMOutputs(store)
        self.driver = driver
        self.node = node
        self._placed_here = placed_here
        self.interval = interval
        self.limit = limit
        self._sent: dict[str, tuple[int, int]] = {}
        """name -> (end, length) of the console tail last published."""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._loop, name=f"consoles@{self.node}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def domain_defined(self, name: str) -> None:
        """Publish the XML ``name``'s domain is defined with here now."""
        try:
            xml = self.driver.defined_xml(name)
            if xml is not None:
                self.outputs.write_domain_xml(name, xml)
        except (HypervisorError, KazooException) as exc:  # a record: never fails the define
            log.warning("event=domain_xml_unpublished vm=%s node=%s error=%s", name, self.node, exc)

    def forget(self, name: str) -> None:
        """The VM is deleted: its console and XML go too."""
        self._sent.pop(name, None)
        try:
            self.outputs.forget(name)
        except KazooException as exc:
            log.warning("event=vm_outputs_not_removed vm=%s error=%s", name, exc)

    def publish(self) -> None:
        """One look at every VM placed here; writes only the consoles that changed."""
        names = set(self._placed_here())
        for gone in set(self._sent) - names:
            del self._sent[gone]
        for name in sorted(names):
            try:
                tail = self.driver.console_tail(name, self.limit)
            except HypervisorError:
                continue  # not defined here (yet), or the hypervisor is away: next look
            if tail is None or self._sent.get(name) == (tail.end, len(tail.data)):
                continue
            self.outputs.write_console(name, self.node, tail.data, tail.end)
            self._sent[name] = (tail.end, len(tail.data))

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.publish()
            except KazooException as exc:  # ZooKeeper away: the next look catches up
                log.warning("event=console_publish_failed node=%s error=%s", self.node, exc)
            except Exception:
                log.exception("event=console_publish_failed node=%s", self.node)
