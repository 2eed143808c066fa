"""Self-fence: a node cut off from ZooKeeper for ``selfFenceAfter`` destroys its domains.

The Cluster spec keeps selfFenceAfter below the time after which the primary
fences this node and restarts its VMs elsewhere, so by then nothing runs here.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from kazoo.protocol.states import KazooState

from hypervisor import DomainDriver, DomainInfo, DomainState, HypervisorError
from zkstore import Store

log = logging.getLogger(__name__)


class SelfFence:
    def __init__(
        self,
        store: Store,
        driver: DomainDriver,
        node: str,
        self_fence_after: Callable[[], float | None],
        on_fenced: Callable[[list[str]], None] | None = None,
    ) -> None:
        self.store = store
        self.driver = driver
        self.node = node
        self._after = self_fence_after
        self._on_fenced = on_fenced or (lambda _names: None)
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()
        store.add_state_listener(self._on_connection)

    def _on_connection(self, state: KazooState) -> None:
        with self._lock:
            if state == KazooState.CONNECTED:
                if self._timer is not None:
                    self._timer.cancel()
                    self._timer = None
                    log.info("event=self_fence_cancelled node=%s reason=reconnected", self.node)
                return
            if self._timer is not None:
                return
            after = self._after()
            if after is None:
                return
            log.warning(
                "event=self_fence_armed node=%s state=%s after=%.1fs", self.node, state, after
            )
            self._timer = threading.Timer(after, self.fence)
            self._timer.daemon = True
            self._timer.start()

    def fence(self) -> None:
        with self._lock:
            self._timer = None
        if self.store.connected:
            return
        running = [
            d.name
            for d in self._managed()
            if d.state in (DomainState.RUNNING, DomainState.PAUSED, DomainState.SHUTTING_DOWN)
        ]
        # Told first, so a reconcile woken by the stop events never counts a guest failure.
        self._on_fenced(running)
        destroyed = []
        for name in running:
            try:
                self.driver.destroy(name)
                destroyed.append(name)
            except HypervisorError as exc:
                log.error(
                    "event=self_fence_destroy_failed node=%s vm=%s error=%s", self.node, name, exc
                )
        log.warning("event=self_fence node=%s destroyed=%s", self.node, ",".join(destroyed))

    def _managed(self) -> list[DomainInfo]:
        try:
            return [d for d in self.driver.list_managed() if d.owner_tag == self.store.root]
        except HypervisorError as exc:
            log.error("event=self_fence_list_failed node=%s error=%s", self.node, exc)
            return []
