"""The node's side of ``pvcctl vm logs`` and ``vm dumpxml``: the serial console output of the
VMs placed here, published to the store at most every ``interval`` while it changes (the
newest CONSOLE_LIMIT bytes), and each domain's XML as this node defined it."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable

from kazoo.exceptions import KazooException

from hypervisor import DomainDriver, HypervisorError, HypervisorUnavailable
from zkstore import Store
from zkstore.console import (
    CONSOLE_LIMIT,
    Output,
    VMOutputs,
    console_output,
    domain_xml_output,
)

log = logging.getLogger(__name__)

CONSOLE_INTERVAL = 1.0
"""Seconds between looks at the consoles of the VMs placed on this node."""

MAX_BACKOFF = 30.0
"""Seconds between looks, at most, while the store or the hypervisor fails them."""


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
        self._lock = threading.Lock()
        self._xml_due: set[str] = set()
        """Domains defined here whose XML the next look publishes."""
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
        with self._lock:
            due = bool(self._xml_due)
        if due:  # the XML of domains defined since the last look: published on the way out
            try:
                self.publish()
            except Exception as exc:
                log.warning("event=console_publish_failed node=%s error=%r", self.node, exc)

    def domain_defined(self, name: str) -> None:
        """Publish the XML ``name``'s domain is defined with here at the next look (within
        ``interval``), in one transaction with the other records of that look: one write
        per VM started fewer (issue 16). A record: it never fails or slows the define."""
        with self._lock:
            self._xml_due.add(name)

    def forget(self, name: str) -> None:
        """The VM is deleted: its console and XML go too."""
        with self._lock:
            self._xml_due.discard(name)
        self._sent.pop(name, None)
        try:
            self.outputs.forget(name)
        except KazooException as exc:
            log.warning("event=vm_outputs_not_removed vm=%s error=%s", name, exc)

    def publish(self) -> None:
        """One look: the XML of each domain defined since the last, and the console of every
        VM placed here that changed, written together (VMOutputs.write_many). What could not
        be written is tried again at the next look."""
        with self._lock:
            due, self._xml_due = self._xml_due, set()
        outputs: list[Output] = []
        try:
            for name in sorted(due):
                try:
                    xml = self.driver.defined_xml(name)
                except HypervisorError as exc:
                    away = isinstance(exc, HypervisorUnavailable)
                    log.warning(
                        "event=domain_xml_unread vm=%s node=%s again=%s error=%s",
                        name,
                        self.node,
                        away,
                        exc,
                    )
                    if away:
                        self.domain_defined(name)  # the hypervisor is away: the next look
                    continue
                if xml is not None:
                    outputs.append(domain_xml_output(name, xml))
            names = set(self._placed_here())
            for gone in set(self._sent) - names:
                del self._sent[gone]
            tails: dict[str, tuple[int, int]] = {}
            for name in sorted(names):
                try:
                    tail = self.driver.console_tail(name, self.limit)
                except HypervisorError:
                    continue  # not defined here (yet), or the hypervisor is away: next look
                if tail is None or self._sent.get(name) == (tail.end, len(tail.data)):
                    continue
                outputs.append(console_output(name, self.node, tail.data, tail.end))
                tails[name] = (tail.end, len(tail.data))
            self.outputs.write_many(outputs)
        except BaseException:
            with self._lock:
                self._xml_due |= due  # none of them is known to be written
            raise
        self._sent.update(tails)

    def _loop(self) -> None:
        failures = 0
        wait = self.interval
        while not self._stop.wait(wait):
            try:
                self.publish()
                failures = 0
            except KazooException as exc:  # ZooKeeper away: the next look catches up
                failures += 1
                log.warning(
                    "event=console_publish_failed node=%s failures=%d error=%s",
                    self.node,
                    failures,
                    exc,
                )
            except Exception:
                failures += 1
                log.exception("event=console_publish_failed node=%s", self.node)
            wait = min(self.interval * 2.0 ** min(failures, 6), MAX_BACKOFF)
