"""The node agent: registers this node, holds its lease, and writes a heartbeat with host
resources every keepalive interval (read from the Cluster spec)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from kazoo.recipe.watchers import DataWatch

from hypervisor import DomainDriver, DomainState, HypervisorError
from schemas import (
    CLUSTER_NAME,
    Cluster,
    DaemonState,
    FenceConfig,
    Node,
    NodeNetwork,
    NodePool,
    NodeResources,
    NodeSpec,
    NodeStatus,
    ObjectMeta,
    RouterState,
    set_condition,
    to_seconds,
    utcnow,
)
from schemas.version import pvc_version
from zkstore import AlreadyExists, Lease, Store, paths
from zkstore.codec import decode

START_REPORT_DELAY = 0.25
"""Seconds a started domain may wait to be reported by a heartbeat (poke_soon)."""
START_REPORT_INTERVAL = 2.0
"""Seconds at least between heartbeats that report starts (poke_soon) while they go on."""

log = logging.getLogger(__name__)

DEFAULT_KEEPALIVE = 5.0


class NodeAgent:
    def __init__(
        self,
        store: Store,
        driver: DomainDriver,
        node: str,
        *,
        coordinator: bool,
        fence: FenceConfig | None = None,
        hypervisor_uri: str,
        disk_dir: str | None = None,
        shared_disk_dir: bool = False,
        migration_uri: str | None = None,
        migration_address: str | None = None,
        allocations: Callable[[], tuple[int, int, int, int]],
        lease_wait: float,
        on_revived: Callable[[], None] | None = None,
        pools: Callable[[], list[NodePool]] | None = None,
        networks: Callable[[], list[NodeNetwork]] | None = None,
        cluster_address: str | None = None,
        on_beat: Callable[[], object] | None = None,
    ) -> None:
        self.store = store
        self.driver = driver
        self.node = node
        self.coordinator = coordinator
        self.fence = fence
        self.hypervisor_uri = hypervisor_uri
        self.disk_dir = disk_dir
        self.shared_disk_dir = shared_disk_dir
        self.migration_uri = migration_uri
        self.migration_address = migration_address
        self._allocations = allocations
        self._on_revived = on_revived or (lambda: None)
        self._pools = pools or (lambda: [])
        self._networks = networks or (lambda: [])
        self._on_beat = on_beat or (lambda: None)
        """Called after each turn of the heartbeat loop, failed or not (the systemd
        watchdog): a loop that hangs stops calling it."""
        self.cluster_address = cluster_address
        self._lease_wait = lease_wait
        self.lease = Lease(store, paths.node_lease(node), {"node": node})
        self.daemon_state = DaemonState.INIT
        self.router_state = RouterState.SECONDARY if coordinator else RouterState.CLIENT
        self.keepalive = DEFAULT_KEEPALIVE
        self.self_fence_after: float | None = None
        self._wake = threading.Event()
        self._soon_lock = threading.Lock()
        self._soon: threading.Timer | None = None
        self._last_start_report: float | None = None  # monotonic: when poke_soon's timer fired
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_beat: float | None = None  # monotonic, after the last successful write
        # The node status as this agent last wrote it, and its znode version.
        self._written: tuple[Any, int] | None = None

    def heartbeat_age(self) -> float | None:
        """Seconds since the last heartbeat written successfully; None before the first."""
        last = self._last_beat
        return None if last is None else time.monotonic() - last

    def register(self) -> None:
        """Create the Node object if it is new; an existing spec is the admin's and stays."""
        node = Node(
            metadata=ObjectMeta(name=self.node),
            spec=NodeSpec(coordinator=self.coordinator, fence=self.fence or FenceConfig()),
        )
        try:
            self.store.create(node)
            log.info("event=node_registered node=%s coordinator=%s", self.node, self.coordinator)
        except AlreadyExists:
            pass
        DataWatch(
            self.store.client,
            self.store.path(paths.resource(Cluster.PLURAL, CLUSTER_NAME)),
            self._on_cluster,
        )
        self.lease.acquire(wait=self._lease_wait)

    def _on_cluster(self, data: bytes | None, _stat: object) -> bool:
        keepalive = DEFAULT_KEEPALIVE
        self_fence_after = None
        if data:
            try:
                cluster = Cluster.model_validate(decode(data))
                keepalive = to_seconds(cluster.spec.fencing.keepalive_interval)
                if cluster.spec.fencing.self_fence_after:
                    self_fence_after = to_seconds(cluster.spec.fencing.self_fence_after)
            except ValueError:
                log.exception("event=bad_cluster_spec")
        self.self_fence_after = self_fence_after
        if keepalive != self.keepalive:
            log.info("event=keepalive_changed node=%s interval=%.3fs", self.node, keepalive)
            self.keepalive = keepalive
            self._wake.set()
        return not self._stop.is_set()

    def start(self) -> None:
        self.daemon_state = DaemonState.RUN
        self._thread = threading.Thread(target=self._heartbeat_loop, name="heartbeat", daemon=True)
        self._thread.start()

    def poke(self) -> None:
        """Heartbeat now rather than at the next interval (domains changed)."""
        self._wake.set()

    def poke_soon(self) -> None:
        """Heartbeat within ``START_REPORT_DELAY`` (a domain started): the starts of a burst
        share one heartbeat, which lists every domain, instead of one each (at 150 VMs a
        node, a converge made that O(VMs²) per node, issue 16). Stops and removals still
        ``poke``: they are reported at once, so a VM moving between nodes is dropped from
        its old node's report as soon as before, and its new node reports it at most
        START_REPORT_DELAY later than before (the flush reads the old node's report), or,
        while starts go on, START_REPORT_INTERVAL after the previous report of starts."""
        with self._soon_lock:
            if self._soon is not None:
                return
            # While starts go on, at most one report of them per START_REPORT_INTERVAL:
            # each heartbeat is read by every cache of the Node kind (the primary's, the
            # API's), and 64 nodes each reporting four times a second during a converge
            # cost more than a VM's own start (issue 16). A start after a quiet spell is
            # reported within START_REPORT_DELAY, as before.
            last = self._last_start_report
            delay = START_REPORT_DELAY
            if last is not None:
                delay = max(delay, last + START_REPORT_INTERVAL - time.monotonic())
            self._soon = threading.Timer(delay, self._poke_now)
            self._soon.daemon = True
            self._soon.start()

    def _poke_now(self) -> None:
        with self._soon_lock:
            self._soon = None
            self._last_start_report = time.monotonic()
        self._wake.set()

    def set_router_state(self, state: RouterState) -> None:
        self.router_state = state
        self._wake.set()

    def stop(self, final_state: DaemonState = DaemonState.STOP) -> None:
        """Keep heartbeating until this very last step, then say why we stopped."""
        self._stop.set()
        self._wake.set()
        with self._soon_lock:
            if self._soon is not None:
                self._soon.cancel()
        if self._thread is not None:
            self._thread.join(10.0)
        self.daemon_state = final_state
        try:
            self.beat()
        except Exception as exc:
            log.warning("event=final_heartbeat_failed node=%s error=%r", self.node, exc)
        self.lease.release()

    def _heartbeat_loop(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                self.beat()
                failures = 0
                wait = self.keepalive
            except Exception as exc:
                failures += 1
                # Back off, but never beyond one interval: a late heartbeat gets us fenced.
                wait = min(self.keepalive, 0.1 * 2 ** min(failures, 6))
                log.warning(
                    "event=heartbeat_failed node=%s failures=%d retry_in=%.2fs error=%r",
                    self.node,
                    failures,
                    wait,
                    exc,
                )
            self._on_beat()
            self._wake.wait(wait)
            self._wake.clear()

    def beat(self) -> None:
        try:
            facts = self.driver.host_facts()
            running = sorted(
                d.name
                for d in self.driver.list_managed()
                if d.owner_tag == self.store.root and d.state == DomainState.RUNNING
            )
        except HypervisorError as exc:
            facts = None
            running = []
            log.warning("event=host_facts_failed node=%s error=%s", self.node, exc)
        allocated, provisioned, vcpus, count = self._allocations()
        total = facts.memory_total_bytes if facts else 0
        # The test driver cannot say what is free; then free is what we have not handed out.
        free = (
            facts.memory_free_bytes
            if facts and facts.memory_free_bytes is not None
            else max(0, total - allocated)
        )
        if facts is None:
            reason, detail = "HypervisorUnavailable", ", hypervisor unreachable"
        elif self.daemon_state != DaemonState.RUN:
            reason, detail = "NotRunning", ""
        elif facts.no_guests_reason is not None:
            # Not Ready, so the scheduler places nothing here.
            reason = "NoGuestSupport"
            detail = f", but {self.hypervisor_uri} can run no guests: {facts.no_guests_reason}"
        else:
            reason, detail = "HeartbeatOK", ""
        ready = reason == "HeartbeatOK"
        message = f"pvcnoded {self.daemon_state.value}{detail}"
        resources = NodeResources(
            memory_total=total,
            memory_used=total - free if total else 0,
            memory_free=free,
            memory_allocated=allocated,
            memory_provisioned=provisioned,
            vcpus_total=facts.cpus if facts else 0,
            vcpus_allocated=vcpus,
            load=facts.load1 if facts else 0.0,
            vm_count=count,
        )

        no_live = self.driver.live_migration_problem()
        if no_live is None and self.migration_uri is None:
            no_live = "no libvirt.migrationUri is known for it"
        revived = False

        def heartbeat(previous: object) -> NodeStatus:
            nonlocal revived
            # domainState and the Drained condition belong to the primary's drain
            # controller: carry them over (compare-and-set, so a write between our
            # read and ours is never undone).
            status = NodeStatus.model_validate(previous) if previous else NodeStatus()
            # The primary marked us dead (and our VMs Unknown); we are back in time.
            revived = (
                status.daemon_state == DaemonState.DEAD and self.daemon_state == DaemonState.RUN
            )
            conditions = set_condition(status.conditions, "Ready", ready, reason, message)
            return NodeStatus(
                conditions=conditions,
                daemon_state=self.daemon_state,
                domain_state=status.domain_state,
                router_state=self.router_state,
                last_heartbeat=utcnow(),
                daemon_version=pvc_version(),
                hypervisor=self.hypervisor_uri,
                domain_type=facts.domain_type if facts else status.domain_type,
                domains=running,
                resources=resources,
                disk_dir=self.disk_dir,
                shared_disk_dir=self.shared_disk_dir,
                migration_uri=self.migration_uri if no_live is None else None,
                migration_address=self.migration_address,
                live_migration_problem=no_live,
                storage=self._pools(),
                cluster_address=self.cluster_address,
                networks=self._networks(),
            )

        try:
            # The status as this agent last wrote it goes first: no read unless the
            # primary's drain controller wrote since (then the write's version check fails).
            self._written = self.store.update_status(
                Node, self.node, heartbeat, known=self._written
            )
        except Exception:
            self._written = None
            raise
        self._last_beat = now = time.monotonic()
        with self._soon_lock:
            last = self._last_start_report
            if last is not None and now - last < START_REPORT_INTERVAL:
                # Starts go on, and this beat reported those so far: the next report of
                # starts waits START_REPORT_INTERVAL from it (poke_soon).
                self._last_start_report = now
        if revived:
            log.info("event=saving_throw_passed node=%s action=report_vms", self.node)
            self._on_revived()
