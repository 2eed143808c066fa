"""Primary election among coordinators, and the primary-only controllers it runs.

This is the first cut: an exclusive lock at /leases/primary; the winner bumps
the cluster epoch and runs the scheduler with it, so a deposed primary's
placement writes fail. The ordered takeover/relinquish handover with floating
addresses comes with the HA work.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from kazoo.protocol.states import KazooState
from kazoo.recipe.lock import Lock

from controllers.fencing import FenceController
from controllers.runtime import Controller
from controllers.scheduler import Scheduler
from schemas import CLUSTER_NAME, Cluster, ClusterStatus, RouterState
from zkstore import ResourceInformer, Store, paths

log = logging.getLogger(__name__)


class PrimaryElection:
    def __init__(
        self,
        store: Store,
        node: str,
        on_state: Callable[[RouterState], None],
        *,
        retry_interval: float = 1.0,
    ) -> None:
        self.store = store
        self.node = node
        self._on_state = on_state
        self._retry_interval = retry_interval
        self._stop = threading.Event()
        self._lost = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock: Lock | None = None
        self.state = RouterState.SECONDARY
        self.epoch: int | None = None
        store.add_state_listener(self._on_connection)

    def start(self) -> None:
        self._set_state(RouterState.SECONDARY)
        self._thread = threading.Thread(target=self._run, name="primary-election", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._lost.set()
        if self._lock is not None:
            self._lock.cancel()
        if self._thread is not None:
            self._thread.join(timeout)

    def _set_state(self, state: RouterState) -> None:
        self.state = state
        log.info("event=router_state node=%s state=%s epoch=%s", self.node, state.value, self.epoch)
        self._on_state(state)

    def _on_connection(self, state: KazooState) -> None:
        # A lost session means our ephemeral lock node is gone: someone else may win now.
        if state == KazooState.LOST:
            self._lost.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            lock = self.store.client.Lock(self.store.path(paths.LEASE_PRIMARY), self.node)
            self._lock = lock
            try:
                # Blocks while another coordinator is primary; stop() cancels it.
                if not lock.acquire() or self._stop.is_set():
                    lock.release()
                    continue
            except Exception as exc:
                log.warning("event=election_failed node=%s error=%r", self.node, exc)
                self._stop.wait(self._retry_interval)
                continue
            self._lost.clear()
            workers: list[Scheduler | ClusterStatusController | FenceController] = []
            try:
                self._set_state(RouterState.TAKEOVER)
                self.epoch = self.store.bump_epoch(self.node)
                scheduler = Scheduler(self.store, self.epoch)
                workers = [
                    scheduler,
                    ClusterStatusController(self.store, self.node, self.epoch),
                    FenceController(self.store, self.node, self.epoch, scheduler),
                ]
                for worker in workers:
                    worker.start()
                self._set_state(RouterState.PRIMARY)
                self._lost.wait()
            except Exception as exc:
                log.error("event=primary_failed node=%s error=%r", self.node, exc)
            finally:
                self._set_state(RouterState.RELINQUISH)
                for worker in reversed(workers):
                    worker.stop()
                try:
                    lock.release()
                except Exception as exc:
                    log.warning("event=lock_release_failed node=%s error=%r", self.node, exc)
                self._set_state(RouterState.SECONDARY)
            self._stop.wait(self._retry_interval)


class ClusterStatusController:
    """Keeps Cluster.status.primary and .epoch naming the current primary."""

    def __init__(self, store: Store, node: str, epoch: int) -> None:
        self.store = store
        self.node = node
        self.epoch = epoch
        self.clusters = ResourceInformer(store, Cluster, lambda key: self.controller.enqueue(key))
        self.controller = Controller("cluster-status", self.reconcile, workers=1)

    def start(self) -> None:
        self.controller.start()
        self.clusters.start()

    def stop(self) -> None:
        self.controller.stop()
        self.clusters.close()

    def reconcile(self, name: str) -> float | None:
        cluster = self.clusters.get(name)
        if cluster is None or name != CLUSTER_NAME:
            return None
        status = cluster.status or ClusterStatus()
        if status.primary == self.node and status.epoch == self.epoch:
            return None
        status.primary = self.node
        status.epoch = self.epoch
        status.observed_generation = cluster.metadata.generation
        self.store.write_status(Cluster, CLUSTER_NAME, status)
        return None
