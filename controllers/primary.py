"""Primary election among coordinators, the ordered handover, and the primary-only work.

Coordinators contend for an exclusive lock at /leases/primary. A handover runs
in phases ordered by the handover write lock (/locks/primary-handover):

  old primary (relinquish)               new primary (takeover)
  1. take the handover write lock
  2. give up /leases/primary      ->     3. win /leases/primary, bump the epoch
                                            (the old primary's writes now fail)
  4. stop primary-only work,             5. wait for the handover write lock
     drop floating addresses,
     release the handover lock     ->     6. re-check the epoch, take the floating
                                             addresses, start primary-only work,
                                             release the handover lock: primary

Work that must not straddle a handover (a drain step) holds the read side, so
it waits while a takeover is under way and a handover waits for it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeAlias

from kazoo.exceptions import CancelledError, LockTimeout
from kazoo.protocol.states import KazooState, ZnodeStat
from kazoo.recipe.lock import Lock, WriteLock
from kazoo.recipe.watchers import ChildrenWatch, DataWatch

from controllers.drain import DrainController
from controllers.fencing import AgentFactory, FenceController, configured_agent
from controllers.floating import FloatingAddresses, Held
from controllers.migrations import MigrationController
from controllers.pool_status import PoolStatusController
from controllers.requests import RequestController
from controllers.runtime import Controller
from controllers.scheduler import Scheduler
from controllers.volume_reaper import VolumeReaper
from schemas import CLUSTER_NAME, Cluster, ClusterStatus, RouterState
from zkstore import (
    EpochMoved,
    Lease,
    ResourceInformer,
    Store,
    handover_write_lock,
    paths,
    release,
)
from zkstore.codec import decode

log = logging.getLogger(__name__)

_Worker: TypeAlias = (
    "Scheduler | ClusterStatusController | FenceController | DrainController | MigrationController"
    " | PoolStatusController | VolumeReaper | RequestController"
)
"""The controllers a primary runs."""


def _lock_node(lock: Lock) -> str | None:
    """The znode that makes ``lock`` ours (kazoo's Lock keeps its sequential node's name)."""
    node = getattr(lock, "node", None)
    return f"{lock.path}/{node}" if node else None


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
        addresses: Held | None = None,
        retry_interval: float = 1.0,
        handover_timeout: float = 30.0,
        fence_agents: AgentFactory = configured_agent,
    ) -> None:
        self.store = store
        self._fence_agents = fence_agents
        self.node = node
        self._on_state = on_state
        self.addresses: Held = addresses or FloatingAddresses(None, [])
        self._retry_interval = retry_interval
        self._handover_timeout = handover_timeout
        self._stop = threading.Event()
        # Set whenever something that decides the role changed: the session, the
        # preferred primary, the live coordinators.
        self._changed = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock: Lock | None = None
        self._takeover_wait: WriteLock | None = None
        self._addresses_dropped = threading.Event()
        self._held_lock: Lock | None = None
        self._probe_pending = threading.Event()
        # Half the session: ZooKeeper expires it after a whole one without contact.
        self._contact_limit = store.client._session_timeout / 1000.0 / 2
        self._last_contact = time.monotonic()
        self._contending = False
        self._preferred: str | None = None
        self._coordinators: set[str] = set()
        self._session_lost = False
        self._epoch_moved = threading.Event()
        self.presence = Lease(store, f"{paths.LEASES_COORDINATORS}/{node}", {"node": node})
        self.state = RouterState.SECONDARY
        self.epoch: int | None = None
        store.add_state_listener(self._on_connection)

    def start(self) -> None:
        self._set_state(RouterState.SECONDARY)
        # Left behind by a crash of this daemon: a secondary holds no floating address.
        self.addresses.release()
        self.presence.acquire(wait=self.store.client._session_timeout / 1000.0 + 5.0)
        ChildrenWatch(
            self.store.client, self.store.path(paths.LEASES_COORDINATORS), self._on_coordinators
        )
        DataWatch(
            self.store.client,
            self.store.path(paths.resource(Cluster.PLURAL, CLUSTER_NAME)),
            self._on_cluster,
        )
        DataWatch(self.store.client, self.store.path(paths.EPOCH), self._on_epoch)
        self._thread = threading.Thread(target=self._run, name="primary-election", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._changed.set()
        self._cancel_takeover_wait()
        if self._lock is not None:
            self._lock.cancel()
        if self._thread is not None:
            self._thread.join(timeout + self._handover_timeout)
        self.presence.release()
        self.addresses.release()  # whatever the election thread got to: none stay behind
        self.addresses.close()

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
        acting = self.state in (RouterState.TAKEOVER, RouterState.PRIMARY, RouterState.RELINQUISH)
        if state == KazooState.LOST:
            # Our ephemeral lock nodes are gone: someone else may win now and take the
            # floating addresses, so ours go at once (local calls only).
            self._session_lost = True
            self._changed.set()
            self._cancel_takeover_wait()
            if acting:
                self.addresses.release()
        elif state == KazooState.SUSPENDED and acting:
            # kazoo suspends after 2/3 of the session without an answer and says LOST only
            # once it reaches ZooKeeper again; another node may take the addresses as soon
            # as our session expires, so they go now (on a thread: netlink, not kazoo's).
            threading.Thread(
                target=self._drop_addresses, name="drop-addresses", daemon=True
            ).start()
        elif state == KazooState.CONNECTED and self._addresses_dropped.is_set():
            self._changed.set()  # still primary with the same session: take them back

    def _mind_contact(self) -> None:
        """Hold the floating addresses only while ZooKeeper answers: our session may expire
        (and another node take them) before kazoo even reports the connection suspended."""
        silence = time.monotonic() - self._last_contact
        if silence > self._contact_limit:
            if not self._addresses_dropped.is_set():
                log.warning(
                    "event=zookeeper_silent node=%s silence=%.1fs limit=%.1fs",
                    self.node,
                    silence,
                    self._contact_limit,
                )
                self._drop_addresses()
        elif self._addresses_dropped.is_set() and self.store.connected:
            self._retake_addresses()
        # One probe at a time: a stream of requests would stand in for kazoo's pings, and
        # kazoo notices a dead connection only by a ping left unanswered.
        if not self._probe_pending.is_set():
            self._probe_pending.set()
            probe = self.store.client.exists_async(self.store.path(paths.EPOCH))
            probe.rawlink(self._on_probe)

    def _on_probe(self, result: Any) -> None:
        self._probe_pending.clear()
        try:
            result.get()
        except Exception:
            return
        self._last_contact = time.monotonic()

    def _drop_addresses(self) -> None:
        log.warning(
            "event=floating_addresses_dropped node=%s reason=zookeeper_unreachable", self.node
        )
        self._addresses_dropped.set()
        self.addresses.release()

    def _retake_addresses(self) -> None:
        """Back in touch with the same session: still primary, if the epoch agrees."""
        try:
            if self.store.read_epoch(sync=True) != self.epoch:
                raise EpochMoved(f"the epoch moved past {self.epoch}")
            # Our election node still there means our session still holds the role; once
            # it is gone another coordinator may be taking the addresses.
            held = self._held_lock
            if held is None or held.node is None:
                raise RuntimeError("not holding the primary lock")
            stat = self.store.client.exists(f"{held.path}/{held.node}")
            if stat is None or stat.ephemeralOwner != self.store.client.client_id[0]:
                raise RuntimeError("our primary lock node is gone (session expired)")
            self.addresses.take()
        except Exception as exc:
            log.warning("event=floating_addresses_retake_failed node=%s error=%r", self.node, exc)
            return
        self._addresses_dropped.clear()
        log.info("event=floating_addresses_retaken node=%s epoch=%s", self.node, self.epoch)

    def _reevaluate(self) -> None:
        if self._contending and self.should_defer() and self._lock is not None:
            self._lock.cancel()
        self._changed.set()
        self._cancel_takeover_wait()

    def _cancel_takeover_wait(self) -> None:
        waiting = self._takeover_wait
        if waiting is not None and self._should_give_up():
            waiting.cancel()

    def should_defer(self) -> bool:
        """Another live coordinator is the admin's preferred primary."""
        preferred = self._preferred
        return preferred is not None and preferred != self.node and preferred in self._coordinators

    def _should_give_up(self) -> bool:
        return (
            self._stop.is_set()
            or self._session_lost
            or self.should_defer()
            or self._epoch_moved.is_set()
        )

    def _on_epoch(self, _data: bytes | None, stat: ZnodeStat | None) -> bool:
        """Any epoch this node did not write ends its term at once (it was paused past its
        session, another took over, and it came back)."""
        epoch = self.epoch
        if (
            stat is not None
            and epoch is not None
            and int(stat.version) != epoch
            and self.state in (RouterState.TAKEOVER, RouterState.PRIMARY)
        ):
            log.warning(
                "event=epoch_moved node=%s epoch=%s now=%s action=relinquish",
                self.node,
                epoch,
                stat.version,
            )
            self._epoch_moved.set()
            self._changed.set()
            self._cancel_takeover_wait()
        return not self._stop.is_set()

    # -- the role ------------------------------------------------------------

    def _set_state(self, state: RouterState) -> None:
        self.state = state
        log.info("event=router_state node=%s state=%s epoch=%s", self.node, state.value, self.epoch)
        self._on_state(state)

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            self._changed.clear()
            # A lost session is over once we contend again with the new one.
            self._session_lost = False
            # So is an epoch moved under a past term.
            self._epoch_moved.clear()
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
                self._back_off("election_failed", failures, exc)
                continue
            finally:
                self._contending = False
            if not acquired or self._should_give_up():
                # The failsafe re-check: a round won on a view that has since moved is
                # given back unused.
                self._release(lock)
                continue
            if self._serve(lock):
                failures = 0
            else:
                failures += 1
                self._back_off("primary_retry", failures, None)

    def _back_off(self, event: str, failures: int, error: Exception | None) -> None:
        delay = min(self._retry_interval * 2 ** min(failures, 5), 30.0)
        log.warning(
            "event=%s node=%s failures=%d retry_in=%.1fs error=%r",
            event,
            self.node,
            failures,
            delay,
            error,
        )
        self._stop.wait(delay)

    def _serve(self, lock: Lock) -> bool:
        """Act as primary until told to stop; False when it failed (the caller backs off)."""
        workers: list[_Worker] = []
        handover = handover_write_lock(self.store, self.node)
        holding = took_over = False
        try:
            self._addresses_dropped.clear()
            self._epoch_moved.clear()
            self.epoch = None  # until our bump returns, no epoch is ours to defend
            self._set_state(RouterState.TAKEOVER)
            # In one transaction with a check on our own lock node: a session that expired
            # while we won (our lock node gone) cannot start an epoch.
            self.epoch = self.store.bump_epoch(
                self.node, expected=self.store.read_epoch(sync=True), lock_path=_lock_node(lock)
            )
            holding = self._wait_for_handover(handover)
            if not holding:
                log.info("event=takeover_abandoned node=%s epoch=%s", self.node, self.epoch)
                return True
            took_over = True
            # Before touching the host network: a primary paused in the wait must not
            # take addresses on a stale view.
            if self.store.read_epoch(sync=True) != self.epoch:
                raise EpochMoved(f"the epoch moved past {self.epoch} during the takeover")
            self.addresses.take()
            if self._session_lost:
                self.addresses.release()  # LOST came between the epoch check and the take
                return True
            scheduler = Scheduler(self.store, self.epoch)
            workers = [
                scheduler,
                ClusterStatusController(self.store, self.node, self.epoch),
                FenceController(
                    self.store, self.node, self.epoch, scheduler, agents=self._fence_agents
                ),
                DrainController(self.store, self.node, self.epoch, scheduler),
                MigrationController(self.store, self.node, self.epoch, scheduler),
                PoolStatusController(self.store, self.node, self.epoch, scheduler),
                VolumeReaper(self.store, self.node, primary=True),
                RequestController(self.store, self.node, self.epoch),
            ]
            for worker in workers:
                worker.start()
            self._release(handover)
            holding = False
            self._set_state(RouterState.PRIMARY)
            self._last_contact = time.monotonic()
            self._held_lock = lock
            while not self._should_give_up():
                self._changed.wait(min(self._retry_interval, self._contact_limit / 4))
                self._changed.clear()
                self._mind_contact()
            why = (
                "shutdown"
                if self._stop.is_set()
                else "session lost"
                if self._session_lost
                else f"switchover to {self._preferred}"
            )
            log.info("event=relinquish node=%s epoch=%s why=%r", self.node, self.epoch, why)
            return True
        except Exception as exc:
            log.error("event=primary_failed node=%s error=%r", self.node, exc)
            return False
        finally:
            self._relinquish(lock, handover, holding if took_over else None, workers)

    def _wait_for_handover(self, handover: WriteLock) -> bool:
        """Block until the previous primary has finished relinquishing (or we give up)."""
        started = time.monotonic()
        self._takeover_wait = handover
        try:
            return self._wait_for_handover_loop(handover, started)
        finally:
            self._takeover_wait = None

    def _wait_for_handover_loop(self, handover: WriteLock, started: float) -> bool:
        while not self._should_give_up():
            try:
                if handover.acquire(timeout=self._retry_interval * 5):
                    waited = time.monotonic() - started
                    log.info("event=handover_locked node=%s waited=%.3fs", self.node, waited)
                    return True
            except CancelledError:
                continue
            except LockTimeout:
                log.warning(
                    "event=takeover_waiting node=%s waited=%.1fs holders=%s",
                    self.node,
                    time.monotonic() - started,
                    self._contenders(handover),
                )
            except Exception as exc:
                log.warning("event=takeover_wait_failed node=%s error=%r", self.node, exc)
                self._changed.wait(self._retry_interval)
        return False

    def _relinquish(
        self,
        lock: Lock,
        handover: WriteLock,
        holding: bool | None,
        workers: list[_Worker],
    ) -> None:
        """``holding`` None: the takeover never got the handover lock, so nothing to undo."""
        self._set_state(RouterState.RELINQUISH)
        if holding is None:
            self._release(lock)
            self._set_state(RouterState.SECONDARY)
            return
        if not holding and not self._session_lost:
            # Hold the handover before letting the next primary in, so it waits until our
            # work has stopped and our addresses are gone. A fresh lock object: a cancel
            # meant for the takeover wait must not cancel this.
            handover = handover_write_lock(self.store, self.node)
            try:
                holding = handover.acquire(timeout=self._handover_timeout)
            except Exception as exc:
                log.warning(
                    "event=relinquish_unordered node=%s error=%r holders=%s",
                    self.node,
                    exc,
                    self._contenders(handover),
                )
        self._release(lock)
        for worker in reversed(workers):
            worker.stop()
        self.addresses.release()
        if holding:
            self._release(handover)
        self._set_state(RouterState.SECONDARY)

    def _contenders(self, lock: Lock) -> list[str]:
        try:
            return [str(c) for c in lock.contenders()]
        except Exception:
            return []

    def _release(self, lock: Lock) -> None:
        release(lock, self.node, lambda: self._session_lost)


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
