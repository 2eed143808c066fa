"""Liveness and fencing (primary only): notice a dead node, give it its saving throws, power it
off through its agent, confirm, and only then recover its VMs.

Time is measured on this primary's monotonic clock from when it last saw a
node's heartbeat change; clocks of different hosts are never compared.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from kazoo.exceptions import LockTimeout

from controllers import metrics
from controllers.fence_records import FenceRecord, FenceRecords, FenceStep
from controllers.scheduler import Scheduler
from hypervisor.fence import (
    ExecAgent,
    FenceAgent,
    FenceAgentsAgent,
    FenceError,
    IpmiAgent,
    PowerState,
)
from schemas import (
    CLUSTER_NAME,
    GONE_STATES,
    Cluster,
    ClusterSpec,
    Condition,
    DaemonState,
    FenceConfig,
    Node,
    NodeStatus,
    Placement,
    RouterState,
    RunStrategy,
    VirtualMachine,
    VirtualMachineStatus,
    VMPhase,
    set_condition,
    to_seconds,
)
from schemas.fence_agents import split_address
from zkstore import (
    EpochMoved,
    Holders,
    Informer,
    NotFound,
    PlacementMoved,
    ResourceInformer,
    Store,
    exclusive_lock,
    paths,
)
from zkstore.events import EventLog
from zkstore.secrets import SecretMissing

log = logging.getLogger(__name__)

RECOVERY_WORKERS = 16
"""VMs of a fenced node recovered at once (their targets still chosen one at a time)."""

_ACTING = (RouterState.TAKEOVER, RouterState.PRIMARY, RouterState.RELINQUISH)

FENCE_LOCK = "fence"


def agent_for(config: FenceConfig) -> FenceAgent | None:
    if config.agent == "ipmi" and config.address:
        host, port = split_address(config.address)
        password = config.password.get_secret_value() if config.password else ""
        return IpmiAgent(host, config.user or "", password, port=int(port or 623))
    if config.agent == "exec":
        return ExecAgent(list(config.command))
    if config.agent == "fence-agents" and config.fence_agent:
        return FenceAgentsAgent(
            config.fence_agent,
            address=config.address,
            user=config.user,
            password=config.password.get_secret_value() if config.password else None,
            options=config.options,
        )
    return None


@dataclass
class NodeWatch:
    last_heartbeat: str | None
    last_seen: float
    dead_since: float | None = None
    lease_lost_at: float | None = None
    suspended_logged: bool = False


class FenceStepFailed(Exception):
    """A step of a fence did not complete; it is retried with back-off."""


AgentFactory = Callable[[str, FenceConfig], FenceAgent | None]
"""The fence agent of a node (its name and fence config), or None when it has none."""


def configured_agent(_node: str, config: FenceConfig) -> FenceAgent | None:
    return agent_for(config)


class FenceController:
    def __init__(
        self,
        store: Store,
        node: str,
        epoch: int,
        scheduler: Scheduler,
        *,
        agents: AgentFactory = configured_agent,
    ) -> None:
        self.store = store
        self._agents = agents
        self.node = node
        self.epoch = epoch
        self.scheduler = scheduler
        self.nodes = ResourceInformer(store, Node, self._wake_up)
        self.leases = Informer(store, paths.LEASES_NODES, self._wake_up, children=())
        self.clusters = ResourceInformer(store, Cluster, self._wake_up)
        self._watch: dict[str, NodeWatch] = {}
        self.records = FenceRecords(store)
        # node -> (monotonic time of the next try, failures so far)
        self._retry_at: dict[str, tuple[float, int]] = {}
        self._interval: float | None = None
        self.events = EventLog(store)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        for informer in (self.clusters, self.leases, self.nodes):
            informer.start()
        self._thread = threading.Thread(target=self._loop, name="fencing", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(30.0)
        for informer in (self.nodes, self.leases, self.clusters):
            informer.close()

    def _wake_up(self, _key: str) -> None:
        self._wake.set()

    def _spec(self) -> ClusterSpec:
        cluster = self.clusters.get(CLUSTER_NAME)
        return cluster.spec if cluster else ClusterSpec()

    def _loop(self) -> None:
        failures = 0
        while not self._stop.is_set():
            interval = to_seconds(self._spec().fencing.keepalive_interval)
            try:
                self.check()
                failures = 0
            except Exception as exc:
                failures += 1
                log.warning("event=fence_check_failed failures=%d error=%r", failures, exc)
            # Check at least twice per keepalive so timings are met to half an interval;
            # back off (to one interval) only while checks keep failing.
            self._wake.wait(interval if failures else interval / 2)
            self._wake.clear()

    def check(self) -> None:
        if not self.store.connected:
            # SUSPENDED: our view is stale. Restart every window when we are back, so a
            # primary that was cut off never fences on the silence it did not see.
            self._watch.clear()
            return
        spec = self._spec()
        fencing = spec.fencing
        interval = to_seconds(fencing.keepalive_interval)
        dead_after = fencing.dead_after()
        throws = interval * fencing.saving_throws
        now = time.monotonic()
        if interval != self._interval:
            # Silence that began under the old pace is not measured against a new, shorter
            # window: every node gets a full window at the new interval.
            if self._interval is not None:
                log.info("event=fence_windows_restarted interval=%.3fs", interval)
            self._interval = interval
            for each in self._watch.values():
                each.last_seen = now
                each.dead_since = None
                each.lease_lost_at = None
        live = set(self.leases.keys())
        records = self.records.all()
        for node in self.nodes.objects():
            name = node.name
            if name == self.node:
                continue
            status = node.status or NodeStatus()
            watch = self._watch.get(name)
            if watch is None:
                # A node first seen now gets a full window from now: a primary that just
                # took over never fences on what happened before its term.
                watch = self._watch[name] = NodeWatch(status.last_heartbeat, now)
            if status.last_heartbeat != watch.last_heartbeat:
                watch.last_heartbeat = status.last_heartbeat
                watch.last_seen = now
            silent = now - watch.last_seen
            if name in live:
                watch.lease_lost_at = None
            elif watch.lease_lost_at is None:
                watch.lease_lost_at = now
            record = records.get(name)
            if record is not None:
                self._carry_on(node, record, status, spec, silent, now)
                continue
            if status.daemon_state == DaemonState.RUN and not self._silent(watch, now, interval):
                if watch.dead_since is not None:
                    log.info("event=saving_throw_passed node=%s", name)
                    watch.dead_since = None
                continue
            if status.daemon_state not in (DaemonState.RUN, DaemonState.DEAD):
                # Only a node that has run can die: one still starting (no heartbeat yet, or
                # init) is never fenced for being slow; a node that said goodbye (stop,
                # shutdown) stopped in order; a fenced one is not fenced twice.
                continue
            if watch.dead_since is None:
                if not self._silent(watch, now, interval):
                    continue
                why = (
                    f"no heartbeat for {silent:.1f}s"
                    if silent >= dead_after
                    else f"lease lost and no heartbeat for {silent:.1f}s"
                )
                if not self._mark_dead(node, why):
                    continue  # its fresh status says it stopped in order
                watch.dead_since = now
                log.warning(
                    "event=node_dead node=%s why=%r saving_throws=%d",
                    name,
                    why,
                    fencing.saving_throws,
                )
                continue
            if now - watch.dead_since < throws:
                continue
            if self._suspended(name, spec, watch):
                continue
            self.records.begin(name, self.epoch)
            self._carry_on(node, FenceRecord(FenceStep.FENCING), status, spec, silent, now)

    def _silent(self, watch: NodeWatch, now: float, interval: float) -> bool:
        """Dead by silence: no heartbeat for the whole window; or its lease gone and no
        heartbeat for two intervals since. A node that heartbeats is never dead because
        of a missing lease alone (it is taking it again)."""
        dead_after = (self._interval or interval) * self._spec().fencing.fence_intervals
        silent = now - watch.last_seen
        if silent >= dead_after:
            return True
        return watch.lease_lost_at is not None and (
            now - max(watch.lease_lost_at, watch.last_seen) >= 2 * interval
        )

    def _suspended(self, name: str, spec: ClusterSpec, watch: NodeWatch) -> bool:
        if not spec.maintenance:
            watch.suspended_logged = False
            return False
        if not watch.suspended_logged:
            log.warning("event=fence_suspended node=%s reason=maintenance", name)
            self.events.record(
                "Node",
                name,
                "FencingSuspended",
                "maintenance mode is on: the node is not fenced",
                type_="Warning",
                source=self.node,
            )
            watch.suspended_logged = True
        self._write_node(
            name,
            lambda s: set_condition(
                s,
                "Fenced",
                False,
                "FencingSuspended",
                "maintenance mode is on: the node is not fenced",
            ),
        )
        return True

    # -- the fence, a state machine kept in ZooKeeper ------------------------

    def _carry_on(
        self,
        node: Node,
        record: FenceRecord,
        status: NodeStatus,
        spec: ClusterSpec,
        silent: float,
        now: float,
    ) -> None:
        """Take the node's fence one step further: fencing -> fenced (holders released)
        -> recovered -> poweredOn, then the record goes once the node runs again. Every
        step is idempotent, so a new primary carries on where the last one stopped."""
        name = node.name
        interval = self._interval or to_seconds(spec.fencing.keepalive_interval)
        back_off = self._retry_at.get(name)
        if back_off is not None and now < back_off[0]:
            return
        try:
            if record.step == FenceStep.FENCING:
                if status.daemon_state == DaemonState.RUN and silent < interval * 2:
                    # It came back before its power-off was confirmed: nothing to finish.
                    log.info("event=fence_cancelled node=%s reason=running_again", name)
                    self.records.remove(name)
                    return
                self.fence(node, spec)
            elif record.step == FenceStep.FENCED:
                self._finish(node, spec)
            elif record.step == FenceStep.RECOVERED:
                self._power_on(node)
            elif status.daemon_state == DaemonState.RUN and silent < interval * 2:
                log.info("event=fence_done node=%s reason=running_again", name)
                self.records.remove(name)
                return
        except Exception as exc:  # any error: this node's fence backs off, the others go on
            delay = min(interval * 2 ** (back_off[1] if back_off else 0), 60.0)
            self._retry_at[name] = (now + delay, (back_off[1] if back_off else 0) + 1)
            log.warning(
                "event=fence_step_failed node=%s step=%s error=%s retry_in=%.1fs",
                name,
                record.step.value,
                exc,
                delay,
            )
            return
        self._retry_at.pop(name, None)

    @contextlib.contextmanager
    def _fence_lock(self) -> Iterator[None]:
        """Hold the cluster-wide fence lock, in this primary's epoch (re-read after a sync):
        a primary that was paused must not act on a node on a stale view."""
        lock = exclusive_lock(self.store, FENCE_LOCK, self.node)
        try:
            got = lock.acquire(timeout=60)
        except LockTimeout:
            got = False
        if not got:
            raise FenceStepFailed("another fence holds the fence lock")
        try:
            if self.store.read_epoch(sync=True) != self.epoch:
                raise EpochMoved(f"the epoch moved past {self.epoch}")
            yield
        finally:
            lock.release()

    def fence(self, node: Node, spec: ClusterSpec) -> None:
        name = node.name
        with self._fence_lock():
            # Maintenance mode switched on since the last look must not be missed.
            cluster = self.store.get(Cluster, CLUSTER_NAME) if self._has_cluster() else None
            if cluster is not None and cluster.spec.maintenance:
                raise FenceStepFailed("maintenance mode is on")
            confirmed, detail = self._power_off(node, spec)
            metrics.count_fence(name, confirmed)
            self.events.record(
                "Node",
                name,
                "Fenced" if confirmed else "FenceFailed",
                detail,
                type_="Warning",
                source=self.node,
            )
            if not confirmed:
                log.error("event=fence_failed node=%s detail=%r retrying=true", name, detail)
                self._write_node(
                    name,
                    lambda s: set_condition(
                        s,
                        "Fenced",
                        False,
                        "FenceFailed",
                        f"{detail}; its VMs are not recovered until a power-off is confirmed "
                        "(retried with back-off)",
                    ),
                )
                raise FenceStepFailed(detail)
            log.warning("event=node_fenced node=%s detail=%r", name, detail)
            self._write_node(
                name,
                lambda s: set_condition(s, "Fenced", True, "PoweredOff", detail),
                DaemonState.FENCED,
            )
            if not self.records.advance(
                name, FenceStep.FENCED, self.epoch, after=FenceStep.FENCING
            ):
                raise FenceStepFailed("the fence record changed under this fence")
        self._finish(node, spec)

    def _fence_config(self, node: Node) -> FenceConfig:
        """The node's fence agent with its credentials, read now from their own znode: only
        here, on the primary, and never kept. SecretMissing when its spec names a password
        that is not stored (or this identity may not read)."""
        return self.store.reveal(node).spec.fence

    def _has_cluster(self) -> bool:
        return self.store.exists(Cluster, CLUSTER_NAME)

    def _finish(self, node: Node, spec: ClusterSpec) -> None:
        """After a confirmed power-off: nothing of the node holds a domain any more, so its
        holders go and its VMs are recovered. The node must still be off: whoever confirmed
        it (maybe a primary that died since) may be long gone, and a node powered on again
        meanwhile may run its VMs, so it is fenced again instead."""
        name = node.name
        with self._fence_lock():
            agent = self._agents(name, self._fence_config(node))
            if agent is None:
                raise FenceStepFailed("no fence agent to confirm the node is still off")
            try:
                state = agent.power_status()
            except FenceError as exc:
                raise FenceStepFailed(f"cannot confirm the node is still off: {exc}") from exc
            if state != PowerState.OFF:
                log.warning("event=fence_reopened node=%s power=%s", name, state.value)
                self.records.advance(name, FenceStep.FENCING, self.epoch, after=FenceStep.FENCED)
                raise FenceStepFailed(
                    f"power is {state.value} again before its VMs were recovered: fencing again"
                )
            Holders(self.store).release_node(name)
        if spec.fencing.successful_fence == "migrate":
            self.recover(name)
        if not self.records.advance(name, FenceStep.RECOVERED, self.epoch, after=FenceStep.FENCED):
            raise FenceStepFailed("the fence record changed under this fence")
        self._power_on(node)

    def _power_on(self, node: Node) -> None:
        name = node.name
        agent = self._agents(name, self._fence_config(node))
        if agent is not None:
            try:
                agent.power_on()
            except FenceError as exc:
                raise FenceStepFailed(f"power on failed: {exc}") from exc
            log.info("event=node_powered_on node=%s", name)
            self.events.record(
                "Node", name, "PoweredOn", "powered on again after the fence", source=self.node
            )
        self.records.advance(name, FenceStep.POWERED_ON, self.epoch, after=FenceStep.RECOVERED)

    def _power_off(self, node: Node, spec: ClusterSpec) -> tuple[bool, str]:
        try:
            config = self._fence_config(node)
        except SecretMissing as exc:
            # Never the mask in its place: the fence fails, saying what to do.
            return False, f"cannot fence: {exc}"
        agent = self._agents(node.name, config)
        if agent is None:
            return False, "no fence agent configured (spec.fence.agent is none)"
        log.warning("event=fence_start node=%s agent=%r", node.name, agent.description)
        self.events.record(
            "Node",
            node.name,
            "FenceStarted",
            f"powering off via {agent.description}",
            type_="Warning",
            source=self.node,
        )
        request_error = ""
        try:
            agent.power_off()
        except FenceError as exc:
            # The request may have worked even so (a slow BMC): the power status decides.
            request_error = f"power off request failed: {exc}; "
            log.warning("event=power_off_request_failed node=%s error=%s", node.name, exc)
        deadline = time.monotonic() + max(10.0, spec.fencing.dead_after())
        delay = 0.2
        while True:
            try:
                state = agent.power_status()
            except FenceError as exc:
                state, last_error = PowerState.UNKNOWN, str(exc)
            else:
                last_error = ""
            if state == PowerState.OFF:
                return True, f"powered off and confirmed off by {agent.description}"
            if time.monotonic() >= deadline or self._stop.is_set():
                return False, f"{request_error}power state still {state.value} {last_error}".strip()
            self._stop.wait(delay)
            delay = min(delay * 2, 2.0)

    def recover(self, dead: str) -> None:
        """Place the fenced node's VMs elsewhere; those that fit nowhere wait as Pending.
        Each write is compare-and-set against a placement that still names the dead node,
        so a drain or a migrate written since is never overwritten. The VMs are recovered
        ``RECOVERY_WORKERS`` at a time (each is several ZooKeeper round trips; one after
        another, 8 nodes of 156 VMs took a quarter of an hour at 10,000 VMs, issue 16),
        their targets chosen one at a time so no memory is booked twice."""
        names = sorted(self.store.node_index(dead))
        if not names:
            return
        workers = min(RECOVERY_WORKERS, len(names))
        with ThreadPoolExecutor(workers, thread_name_prefix=f"recover-{dead}") as pool:
            # Every VM is tried; the first error (EpochMoved: a deposed primary) is raised.
            outcomes = [pool.submit(self._recover_one, name, dead) for name in names]
        for outcome in outcomes:
            outcome.result()

    def _recover_one(self, name: str, dead: str) -> None:
        try:
            vm = self.store.get(VirtualMachine, name)
        except NotFound:
            return
        if vm.deleting:
            # Terminating: its domain went with the fence (its holder too, just now),
            # so the scheduler may let the object go instead.
            log.info("event=vm_not_recovered vm=%s node=%s why=terminating", name, dead)
            self.scheduler.controller.enqueue(name)
            return
        if vm.spec.run_strategy == RunStrategy.HALTED:
            target, why = None, "halted VMs are not recovered"
        elif (bound := self.scheduler.bound_to(vm)) is not None and bound.node == dead:
            why = (
                f"its disk {bound.disk} is volume {bound.volume} in local pool "
                f"{bound.pool} on {dead}: it stays placed there and starts when {dead} "
                "is back"
            )
            log.warning("event=vm_not_recovered vm=%s node=%s why=%r", name, dead, why)
            self.events.record(
                "VirtualMachine", name, "NotRecovered", why, type_="Warning", source=self.node
            )
            return
        elif (still := self._live_holder(name, dead)) is not None:
            # Its move to the dead node never finished (a live migration whose target
            # lost power): it runs there still. Anywhere else would stop a running guest.
            target, why = still, f"it still runs on {still} (its move to {dead} never finished)"
        else:
            target, why = self.scheduler.book(name, vm, exclude=frozenset({dead}))
        new = Placement(
            node=target,
            epoch=self.epoch,
            reason=f"recovered from {dead}: {why}",
            migration=None,
        )
        try:
            self.store.write_placement(name, new, epoch=self.epoch, only_from=dead)
        except (NotFound, PlacementMoved):
            self.scheduler.assume(name, None)  # not written: the booking goes
            return
        except BaseException:
            self.scheduler.assume(name, None)  # EpochMoved, a lost connection: the same
            raise
        self.scheduler.assume(name, target)
        log.warning("event=vm_recovered vm=%s from=%s to=%s why=%r", name, dead, target, why)
        self.events.record(
            "VirtualMachine",
            name,
            "Recovered",
            f"from fenced node {dead} to {target or 'nowhere yet'}: {why}",
            type_="Warning",
            source=self.node,
        )
        if target is None:
            self.scheduler.controller.enqueue(name)

    def _live_holder(self, vm: str, dead: str) -> str | None:
        """A node other than ``dead`` that holds ``vm`` and is not itself dead or fenced."""
        for holder in sorted(Holders(self.store).read(vm) - {dead}):
            raw = self.store.read_status(Node, holder)
            if raw is None:
                continue
            if NodeStatus.model_validate(raw).daemon_state not in GONE_STATES:
                return holder
        return None

    def _mark_dead(self, node: Node, why: str) -> bool:
        """Record the node as dead, unless its fresh status says it stopped in order (the
        cache can show a lost lease before the node's own last status write)."""
        raw = self.store.read_status(Node, node.name) or {}
        fresh = NodeStatus.model_validate(raw)
        if fresh.daemon_state not in (DaemonState.RUN, DaemonState.DEAD):
            return False
        self._write_node(
            node.name, lambda s: set_condition(s, "Ready", False, "NodeDead", why), DaemonState.DEAD
        )
        self.events.record("Node", node.name, "NodeDead", why, type_="Warning", source=self.node)
        for name in self.store.node_index(node.name):
            try:
                raw = self.store.read_status(VirtualMachine, name) or {}
                status = VirtualMachineStatus.model_validate(raw)
                status.phase = VMPhase.UNKNOWN
                status.reason = "NodeDead"
                status.conditions = set_condition(
                    status.conditions,
                    "Ready",
                    False,
                    "NodeDead",
                    f"node {node.name} is not responding: {why}",
                )
                self.store.write_status(VirtualMachine, name, status)
            except (NotFound, ValueError):
                continue
        return True

    def _write_node(
        self,
        name: str,
        conditions: Callable[[list[Condition]], list[Condition]],
        state: DaemonState | None = None,
    ) -> None:
        def change(raw: object) -> NodeStatus:
            status = NodeStatus.model_validate(raw or {})
            status.conditions = conditions(status.conditions)
            if state is not None:
                status.daemon_state = state
            if state == DaemonState.DEAD and status.router_state in _ACTING:
                # Its last word was a role it no longer holds: the cluster has one primary.
                status.router_state = RouterState.SECONDARY
            return status

        with contextlib.suppress(NotFound):
            self.store.update_status(Node, name, change)
