"""The scheduler (primary only): places each VM that should run on a Ready node that fits it.

Policies follow PVC: ``mem`` most free memory, ``memprov`` most unprovisioned
memory, ``load`` lowest load, ``vcpus`` fewest allocated vCPUs, ``vms`` fewest
VMs. Unlike PVC, a node without room for the VM's memory is never chosen.
"""

from __future__ import annotations

import contextlib
import logging
import threading

from controllers.node_ledger import Ledger, NodeLoad, Share
from controllers.runtime import Controller
from controllers.vm_deleting import DeletingVMs
from schemas import (
    CLUSTER_NAME,
    Cluster,
    ConditionStatus,
    DaemonState,
    Network,
    Node,
    Placement,
    PlacementPolicy,
    PoolType,
    RunStrategy,
    StoragePool,
    VirtualMachine,
    VirtualMachineStatus,
    VMPhase,
    set_condition,
    to_bytes,
)
from schemas.verbs import DOMAIN_FINALIZER, PLACEMENT_FLUSH
from zkstore import (
    AlreadyPlaced,
    Disks,
    EpochMoved,
    Informer,
    NotFound,
    ResourceInformer,
    Store,
    paths,
)
from zkstore.events import EventLog
from zkstore.moves import unready_networks
from zkstore.placements import GroupCommit
from zkstore.volumes import Binding, bound_to, unreached

log = logging.getLogger(__name__)


def rank_key(policy: PlacementPolicy, load: NodeLoad) -> tuple[float, str]:
    """Smaller is better; ties go to the node name so choices are reproducible."""
    score: float
    if policy == PlacementPolicy.MEM:
        score = -load.memory_free
    elif policy == PlacementPolicy.MEMPROV:
        score = -(load.memory_total - load.memory_provisioned)
    elif policy == PlacementPolicy.LOAD:
        score = load.load
    elif policy == PlacementPolicy.VCPUS:
        score = load.vcpus_allocated
    else:
        score = load.vms
    return score, load.name


WORKERS = 32
"""Placement decisions are made one at a time and cost microseconds; the workers' time goes
in waiting for ZooKeeper, and their new placements are written together
(zkstore/placements.py), so more workers make bigger transactions, not more of them."""


class Scheduler:
    def __init__(self, store: Store, epoch: int, workers: int = WORKERS) -> None:
        self.store = store
        self.epoch = epoch
        self.vms = ResourceInformer(store, VirtualMachine, self._on_vm)
        self.nodes = ResourceInformer(store, Node, self._on_node)
        self.leases = Informer(store, paths.LEASES_NODES, self._on_node, children=())
        self.clusters = ResourceInformer(store, Cluster, self._on_node)
        self.events = EventLog(store)
        self.deleting = DeletingVMs(store, self.vms)
        # Placements written but maybe not yet seen by the informer (kube-scheduler's "assume").
        # name -> (the node assumed, the node the cache showed then): kept until the cache
        # shows something else, i.e. our write (or a newer one).
        self._assumed: dict[str, tuple[str, str | None]] = {}
        self._lock = threading.Lock()
        # What each node holds, kept up to date from VM events (only the VMs that changed
        # are read again), so a placement costs O(nodes), not O(VMs).
        self.ledger = Ledger()
        # VMs whose last reconcile left them unplaced: a node change may let them fit.
        self._waiting: set[str] = set()
        # The Ready nodes as of the last node change (ready_nodes): bumped by every event
        # of a node, a lease or the cluster (_on_node), after the informer took it in.
        self._node_changes = 0
        self._ready: tuple[int, dict[str, Node]] | None = None
        # name -> (spec mzxid, memory bytes, vCPUs, halted) of the spec last parsed: a
        # status write (several per VM as its node starts it) then costs a reconcile and a
        # ledger refresh two dict reads, not a parse of the whole VM (issue 16).
        self._specs: dict[str, tuple[int, int, int, bool]] = {}
        # name -> spec mzxid at which the VM was found placed, with its finalizer and not
        # being deleted: nothing to decide until its spec or placement changes.
        self._settled: dict[str, int] = {}
        # Placements are decided one at a time (under _deciding) so memory is never
        # double-booked; the ZooKeeper round trips around them (finalizer, placement
        # transaction, event) overlap on several workers.
        self._deciding = threading.Lock()
        self.placements = GroupCommit(store, epoch)
        self.controller = Controller(
            "scheduler", self.reconcile, workers=workers, list_keys=self.vms.keys
        )

    def start(self) -> None:
        # Caches first: a VM whose placement has not loaded yet looks unplaced, and a
        # new primary must never re-place what already runs somewhere.
        for informer in (self.clusters, self.leases, self.nodes, self.vms):
            informer.start()
        self.controller.start()

    def stop(self) -> None:
        self.controller.stop()
        for informer in (self.vms, self.nodes, self.leases, self.clusters):
            informer.close()

    def _on_vm(self, name: str) -> None:
        self.ledger.touch(name)
        self.controller.enqueue(name)

    def assume(self, vm: str, node: str | None) -> None:
        """Note a placement written elsewhere on the primary (recovery) before the cache sees it."""
        raw = self.vms.placement_raw(vm)
        shown = str(raw["node"]) if isinstance(raw, dict) and raw.get("node") else None
        with self._lock:
            if node is None:
                self._assumed.pop(vm, None)
            else:
                self._assumed[vm] = (node, shown)
        self.ledger.touch(vm)

    def _on_node(self, _name: str) -> None:
        # A node came, went or changed: every unplaced VM may fit now, and a VM being
        # deleted may be let go (its node was fenced). Those are the VMs whose last
        # reconcile left them so: no scan of every VM per heartbeat.
        with self._lock:
            self._node_changes += 1
            waiting = list(self._waiting)
        for vm in waiting:
            self.controller.enqueue(vm)
        for vm in self.deleting.waiting_names():
            self.controller.enqueue(vm)

    def _placed_node(self, vm: str) -> str | None:
        raw = self.vms.placement_raw(vm)
        cached = str(raw["node"]) if isinstance(raw, dict) and raw.get("node") else None
        with self._lock:
            assumed = self._assumed.get(vm)
            if assumed is None:
                return cached
            node, shown = assumed
            if cached == shown:
                # The cache still shows what it did when we booked (no placement, a record
                # without a node, or the node a recovery moves the VM from): our newer
                # write has not reached it yet.
                return node
            del self._assumed[vm]
            return cached

    def ready_nodes(self) -> dict[str, Node]:
        """The nodes a VM may be placed on now: live (a lease), running, not drained, and
        Ready by their agent's own verdict. Worked out again only after a node, lease or
        cluster event: at 64 nodes that was 0.8 ms of CPU in every placement decision,
        made one at a time (issue 16), while heartbeats change it a few times a second."""
        with self._lock:
            changes = self._node_changes
            known = self._ready
        if known is not None and known[0] == changes:
            return dict(known[1])
        ready = self._work_out_ready()
        with self._lock:
            # Kept under the count read before the informers were: an event since makes
            # the next call work it out again.
            if self._ready is None or self._ready[0] <= changes:
                self._ready = (changes, ready)
        return dict(ready)

    def _work_out_ready(self) -> dict[str, Node]:
        live = set(self.leases.keys())
        ready = {}
        for node in self.nodes.objects():
            status = node.status
            if (
                node.name in live
                and status is not None
                and status.daemon_state == DaemonState.RUN
                and not node.spec.drain
                # Its agent's own verdict, e.g. NoGuestSupport: a hypervisor that runs none.
                and all(
                    c.status != ConditionStatus.FALSE
                    for c in status.conditions
                    if c.type == "Ready"
                )
            ):
                ready[node.name] = node
        return ready

    def node_loads(self, nodes: dict[str, Node]) -> dict[str, NodeLoad]:
        self.ledger.refresh(self._contribution, self.vms.keys)
        return self.ledger.loads(
            {
                name: (n.status.resources.memory_total, n.status.resources.load)
                if n.status
                else (0, 0.0)
                for name, n in nodes.items()
            }
        )

    def _contribution(self, name: str) -> Share | None:
        """What VM ``name`` takes on its node, from the caches (None: nowhere)."""
        where = self._placed_node(name)
        facts = self._spec_facts(name) if where is not None else None
        if where is None or facts is None:
            return None
        _, memory, vcpus, halted = facts
        return Share(where, memory, vcpus, halted)

    def _spec_facts(self, name: str) -> tuple[int, int, int, bool] | None:
        """(spec mzxid, memory, vCPUs, halted) of ``name``, parsed once per spec version."""
        version = self.vms.version(name)
        with self._lock:
            known = self._specs.get(name)
        if version is None or (known is not None and known[0] == version):
            return known if version is not None else None
        vm = self.vms.get(name)
        if vm is None:
            return None
        # Kept under the version parsed (newer than ``version`` if it changed meanwhile).
        parsed = int(vm.metadata.resource_version or 0)
        halted = vm.spec.run_strategy == RunStrategy.HALTED
        facts = (parsed, to_bytes(vm.spec.memory), vm.spec.vcpus, halted)
        with self._lock:
            self._specs[name] = facts
        return facts

    def bound_to(self, vm: VirtualMachine) -> Binding | None:
        """The volume in a local pool that binds ``vm`` to its node (records read fresh):
        flush, migrate and recovery leave such a VM where it is."""
        pools = {d.pool for d in vm.spec.disks if d.pool is not None}
        if not pools:
            return None
        local = set()
        for name in pools:
            try:
                if self.store.get(StoragePool, name).spec.type == PoolType.LOCAL:
                    local.add(name)
            except NotFound:
                continue
        records = Disks(self.store).of(vm.name).values() if local else ()
        return bound_to(vm, records, local)

    def default_policy(self) -> PlacementPolicy:
        cluster = self.clusters.get(CLUSTER_NAME)
        return cluster.spec.migration.policy if cluster else PlacementPolicy.MEM

    def choose(
        self, vm: VirtualMachine, exclude: frozenset[str] = frozenset()
    ) -> tuple[str | None, str]:
        """The best node for ``vm``, or None and why each node was rejected."""
        nodes = {n: v for n, v in self.ready_nodes().items() if n not in exclude}
        loads = self.node_loads(nodes)
        memory = to_bytes(vm.spec.memory)
        allowed = set(vm.spec.placement.nodes)
        reasons: list[str] = []
        candidates: list[NodeLoad] = []
        # Pools and the volumes created before bind the VM to the nodes that reach them
        # (zkstore/volumes.py): records read fresh, not a cache. The VM controller checks
        # again anyway.
        creates = any(d.creates for d in vm.spec.disks)
        records = list(Disks(self.store).of(vm.name).values()) if creates else []
        # Only a VM with a disk in a pool, a volume made before or a NIC can be kept off a
        # node by what the node reaches: the others skip those looks (a third of a decision
        # at 64 nodes, and decisions are made one at a time).
        reach = bool(records) or any(d.pool is not None for d in vm.spec.disks)
        networks = bool(vm.spec.nics)
        known = self.nodes.keys()
        for name in sorted(known):
            status = nodes[name].status if name in nodes else None
            if allowed and name not in allowed:
                reasons.append(f"{name}: not in placement.nodes")
            elif name not in nodes or status is None:
                reasons.append(f"{name}: not ready")
            elif reach and (unreached_volumes := unreached(vm, records, name, status)):
                reasons.append(f"{name}: does not reach " + ", ".join(unreached_volumes))
            elif networks and (unready := unready_networks(vm, status)):
                reasons.append(f"{name}: " + "; ".join(unready))
            elif loads[name].memory_free < memory:
                free_mib = loads[name].memory_free // 2**20
                reasons.append(f"{name}: {free_mib} MiB free, needs {memory // 2**20} MiB")
            else:
                candidates.append(loads[name])
        for name in sorted(allowed - set(known)):
            reasons.append(f"{name}: no such node")
        if not candidates:
            return None, "; ".join(reasons) or "no nodes"
        home = vm.spec.placement.home
        if home and any(c.name == home for c in candidates):
            return home, "home node"
        policy = vm.spec.placement.policy or self.default_policy()
        best = min(candidates, key=lambda c: rank_key(policy, c))
        return best.name, f"policy {policy.value}"

    def book(
        self, name: str, vm: VirtualMachine, exclude: frozenset[str] = frozenset()
    ) -> tuple[str | None, str]:
        """``choose``, and book ``name`` on the node chosen before the next decision (one
        decision at a time), for a caller that writes the placement itself (recovery): a
        write that fails must undo the booking with ``assume(name, None)``."""
        with self._deciding:
            target, why = self.choose(vm, exclude)
            if target is not None:
                self.assume(name, target)
        return target, why

    def reconcile(self, name: str) -> float | None:
        if not self.store.connected:
            return 1.0  # SUSPENDED: a primary that cannot reach ZooKeeper decides nothing
        with self._lock:
            self._waiting.discard(name)
            settled = self._settled.get(name)
        if settled is not None and settled == self.vms.version(name):
            if self._placed_node(name) is not None:
                return None  # a status change of a placed VM: nothing to decide
        vm = self.vms.get(name)
        if vm is None:
            with self._lock:
                self._assumed.pop(name, None)
                self._settled.pop(name, None)
                self._specs.pop(name, None)
            return None
        if vm.deleting:
            return self.deleting.reconcile(vm)
        finalized = DOMAIN_FINALIZER in vm.metadata.finalizers
        if not finalized:
            self.deleting.add_finalizer(name)
        if self._placed_node(name) is not None:
            if finalized:
                with self._lock:
                    self._settled[name] = int(vm.metadata.resource_version or 0)
            return None
        if vm.spec.run_strategy == RunStrategy.HALTED:
            self._write_unplaced_status(vm, VMPhase.STOPPED, "Halted", "runStrategy is Halted")
            return None
        missing = sorted(
            n for n in {nic.network for nic in vm.spec.nics} if not self.store.exists(Network, n)
        )
        if missing:
            why = f"network {', '.join(repr(n) for n in missing)} does not exist"
            self._write_unplaced_status(vm, VMPhase.PENDING, "NetworkNotFound", why)
            log.info("event=unschedulable vm=%s why=%r", name, why)
            self._wait_for_nodes(name)
            return None
        # Decided one at a time, and booked (assumed) before the next decision, so memory
        # is never double-booked; the writes then run on several workers at once.
        with self._deciding:
            target, why = self.choose(vm)
            if target is not None:
                self.assume(name, target)
        if target is None:
            self._write_unplaced_status(vm, VMPhase.PENDING, "Unschedulable", why)
            log.info("event=unschedulable vm=%s why=%r", name, why)
            self._wait_for_nodes(name)
            return None
        # A VM a flush unplaced (halted then) and started since keeps its flush record,
        # so the unflush brings it back.
        raw = self.vms.placement_raw(name) or {}
        flushed_from = raw.get("migration") if raw.get("reason") == PLACEMENT_FLUSH else None
        placement = Placement(
            node=target,
            epoch=self.epoch,
            reason=PLACEMENT_FLUSH if flushed_from else why,
            migration=flushed_from,
        )
        try:
            if raw:
                # Placed before (a record without a node): a compare-and-set of that record.
                self.store.write_placement(name, placement, epoch=self.epoch, only_if_unplaced=True)
            else:
                # Never placed: written together with the other workers' new placements.
                self.placements.write(name, placement)
        except AlreadyPlaced as exc:
            log.info("event=placement_skipped vm=%s reason=already_placed node=%s", name, exc.node)
            self.assume(name, exc.node)
            return None
        except NotFound:
            self.assume(name, None)
            return None
        except EpochMoved:
            self.assume(name, None)
            log.warning(
                "event=placement_refused vm=%s reason=epoch_moved epoch=%d", name, self.epoch
            )
            raise
        except BaseException:
            self.assume(name, None)  # not written: the booking goes, a retry decides again
            raise
        log.info("event=placed vm=%s node=%s why=%r epoch=%d", name, target, why, self.epoch)
        self.events.record(
            VirtualMachine.KIND, name, "Scheduled", f"placed on {target}: {why}", source=target
        )
        return None

    def _wait_for_nodes(self, name: str) -> None:
        """Try ``name`` again at the next node change (it fits nowhere now)."""
        with self._lock:
            self._waiting.add(name)

    def _write_unplaced_status(
        self, vm: VirtualMachine, phase: VMPhase, reason: str, message: str
    ) -> None:
        old = vm.status or VirtualMachineStatus()
        conditions = set_condition(old.conditions, "Scheduled", False, reason, message)
        conditions = set_condition(conditions, "Ready", False, reason, message)
        new = VirtualMachineStatus(
            observed_generation=vm.metadata.generation,
            conditions=conditions,
            phase=phase,
            node=None,
            last_node=old.node or old.last_node,
            reason=reason,
        )
        if vm.status is not None and new.wire() == vm.status.wire():
            return
        with contextlib.suppress(NotFound):
            self.store.write_status(VirtualMachine, vm.name, new)
