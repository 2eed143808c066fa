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

from kazoo.exceptions import CancelledError
from kazoo.protocol.states import KazooState
from kazoo.recipe.lock import Lock
from kazoo.recipe.watchers import ChildrenWatch, DataWatch

from controllers.fencing import FenceController
from controllers.runtime import Controller
from controllers.scheduler import Scheduler
from schemas import CLUSTER_NAME, Cluster, ClusterStatus, RouterState
from zkstore import Lease, ResourceInformer, Store, paths
from zkstore.codec import decode

log = logging.getLogger(__name__)


class PrimaryElection:
    """Contend for /leases/primary; run the primary-only controllers while holding it.

    A graceful switchover (Cluster.spec.primary naming another live coordinator)
    is a relinquish by the current primary and a step aside by every other
    contender, so only the preferred node can win the next round.
    """

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
        # Set whenever something that decides the role changed: the session, the
        # preferred primary, the live coordinators.
        self._changed = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock: Lock | None = None
        self._contending = False
        self._preferred: str | None = None
        self._coordinators: set[str] = set()
        self._session_lost = False
        self.presence = Lease(store, f"{paths.LEASES_COORDINATORS}/{node}", {"node": node})
        self.state = RouterState.SECONDARY
        self.epoch: int | None = None
        store.add_state_listener(self._on_connection)

    def start(self) -> None:
        self._set_state(RouterState.SECONDARY)
        self.presence.acquire(wait=self.store.client._session_timeout / 1000.0 + 5.0)
        ChildrenWatch(
            self.store.client, self.store.path(paths.LEASES_COORDINATORS), self._on_coordinators
        )
        DataWatch(
            self.store.client,
            self.store.path(paths.resource(Cluster.PLURAL, CLUSTER_NAME)),
            self._on_cluster,
        )
        self._thread = threading.Thread(target=self._run, name="primary-election", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._changed.set()
        if self._lock is not None:
            self._lock.cancel()
        if self._thread is not None:
            self._thread.join(timeout)
        self.presence.release()

    # -- watches (kazoo's event thread: no blocking calls) -------------------

    def _on_coordinators(self, children: list[str]) -> bool:
        self._coordinators = set(children)
        self._reevaluate()
        return not self._stop.is_set()

    def _on_cluster(self, data: bytes | None, _stat: object) -> bool:
        preferred = None
        if data:
            try:
                preferred = Cluster.model_validate(decode(data)).spec.primary
            except ValueError:
                log.exception("event=bad_cluster_spec")
        self._preferred = preferred
        self._reevaluate()
        return not self._stop.is_set()

    def _on_connection(self, state: KazooState) -> None:
        # A lost session means our ephemeral lock node is gone: someone else may win now.
        if state == KazooState.LOST:
            self._session_lost = True
            self._changed.set()

    def _reevaluate(self) -> None:
        if self._contending and self.should_defer() and self._lock is not None:
            self._lock.cancel()
        self._changed.set()

    def should_defer(self) -> bool:
        """Another live coordinator is the admin's preferred primary."""
        preferred = self._preferred
        return preferred is not None and preferred != self.node and preferred in self._coordinators

    # -- the role ------------------------------------------------------------

    def _set_state(self, state: RouterState) -> None:
        self.state = state
        log.info("event=router_state node=%s state=%s epoch=%s", self.node, state.value, self.epoch)
        self._on_state(state)

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            self._changed.clear()
            if self.should_defer():
                log.debug(
                    "event=election_deferred node=%s preferred=%s", self.node, self._preferred
                )
                self._changed.wait(self._retry_interval)
                continue
            lock = self.store.client.Lock(self.store.path(paths.LEASE_PRIMARY), self.node)
            self._lock = lock
            self._contending = True
            try:
                # Blocks while another coordinator is primary; stop() or a switchover
                # to another node cancels it.
                acquired = lock.acquire()
            except CancelledError:
                acquired = False
            except Exception as exc:
                failures += 1
                delay = min(self._retry_interval * 2 ** min(failures, 5), 30.0)
                log.warning(
                    "event=election_failed node=%s failures=%d retry_in=%.1fs error=%r",
                    self.node,
                    failures,
                    delay,
                    exc,
                )
                self._stop.wait(delay)
                continue
            finally:
                self._contending = False
            failures = 0
            if not acquired or self._stop.is_set() or self.should_defer():
                # The failsafe re-check: a round won on a view that has since moved is
                # given back unused.
                self._release(lock)
                continue
            self._session_lost = False
            self._serve(lock)

    def _serve(self, lock: Lock) -> None:
        workers: list[Scheduler | ClusterStatusController | FenceController] = []
        try:
            self._set_state(RouterState.TAKEOVER)
            self.epoch = self.store.bump_epoch(self.node, expected=self.store.read_epoch(sync=True))
            scheduler = Scheduler(self.store, self.epoch)
            workers = [
                scheduler,
                ClusterStatusController(self.store, self.node, self.epoch),
                FenceController(self.store, self.node, self.epoch, scheduler),
            ]
            for worker in workers:
                worker.start()
            self._set_state(RouterState.PRIMARY)
            while not (self._stop.is_set() or self._session_lost or self.should_defer()):
                self._changed.wait(self._retry_interval)
                self._changed.clear()
            why = (
                "shutdown"
                if self._stop.is_set()
                else "session lost"
                if self._session_lost
                else f"switchover to {self._preferred}"
            )
            log.info("event=relinquish node=%s epoch=%s why=%r", self.node, self.epoch, why)
        except Exception as exc:
            log.error("event=primary_failed node=%s error=%r", self.node, exc)
        finally:
            self._set_state(RouterState.RELINQUISH)
            for worker in reversed(workers):
                worker.stop()
            self._release(lock)
            self._set_state(RouterState.SECONDARY)

    def _release(self, lock: Lock) -> None:
        try:
            lock.release()
        except Exception as exc:
            log.warning("event=lock_release_failed node=%s error=%r", self.node, exc)


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
        current = cluster.status or ClusterStatus()
        if current.primary == self.node and current.epoch == self.epoch:
            return None
        # The informer's objects are shared: change a copy.
        status = current.model_copy(
            update={
                "primary": self.node,
                "epoch": self.epoch,
                "observed_generation": cluster.metadata.generation,
            }
        )
        self.store.write_status(Cluster, CLUSTER_NAME, status)
        return None
