"""The drain controller (primary only): flush and unflush nodes.

A flush (``Node.spec.drain`` true) moves every VM placed on the node to the
node the scheduler would choose without it, a few at a time
(``Cluster.spec.migration.maxParallel``), records where each came from in
``placement.migration``, and marks the node ``flushed`` once nothing runs
there. An unflush (drain false) brings those VMs back the same way and marks
it ``ready``. Each move goes as the VM's ``spec.migration.method`` says (live,
shutdown, or live falling back to shutdown: controllers/departure.py); either way
the target runs a VM only once the source has let go of it (docs/ha.md).

A VM that can go nowhere (its node limit allows no other ready node) holds the
flush, with a FlushBlocked event, unless ``spec.autostart`` is true: then it is
shut down and unplaced, and the unflush starts it on this node again. A live move
that failed for good (the VM placed back here) is tried again after
FAILED_RETRY. An unflush stops the moves not yet begun at once; one in flight is
aborted by its source, or completes and is brought back.

Each step that writes placements holds the read side of the handover lock,
so a flush requested during a takeover waits for the new primary, and a
handover waits for the step in flight.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from kazoo.exceptions import LockTimeout

from controllers.runtime import Controller
from controllers.scheduler import Scheduler
from schemas import (
    CLUSTER_NAME,
    DaemonState,
    DomainState,
    MigrationState,
    Node,
    NodeStatus,
    Placement,
    RunStrategy,
    VirtualMachine,
    VMPhase,
    set_condition,
    to_bytes,
)
from schemas.verbs import PLACEMENT_FLUSH, PLACEMENT_MIGRATE, PLACEMENT_UNFLUSH
from zkstore import (
    EpochMoved,
    Holders,
    NotFound,
    PlacementMoved,
    Store,
    handover_read_lock,
    paths,
    release,
)
from zkstore.events import EventLog

log = logging.getLogger(__name__)

FAILED_RETRY = 60.0
"""Seconds before a flush tries again to move a VM whose live migration failed for good."""

RESYNC = 5.0
"""Seconds between looks at a node whose flush or unflush is under way (VM events
also wake it; this covers a move that produces none, e.g. a VM that fits nowhere)."""


def _in_drain(node: Node) -> bool:
    """A flush or unflush of this node is under way or done (not plain ready)."""
    return node.status is not None and node.status.domain_state != DomainState.READY


def _ends(move: _Move) -> set[str | None]:
    """The nodes a move touches: where it goes and where it came from."""
    return {move.placement.node, move.placement.migration}


def _concerns(raw: Any, draining: set[str]) -> bool:
    """Whether a raw placement is one a drain acts on or waits for (see _placements)."""
    return isinstance(raw, dict) and (
        raw.get("reason") in (PLACEMENT_FLUSH, PLACEMENT_UNFLUSH)
        or raw.get("node") in draining
        or raw.get("migration") in draining
    )


def _settled_elsewhere(raw: Any, obj: Any, status: Any, draining: set[str]) -> bool:
    """A VM a past flush or unflush moved, running where it was put, neither on nor from
    a node in a drain now: no step acts on it or waits for it, so it is not even parsed
    (after a rolling flush and unflush of every node, every VM's placement says so). Read
    from the raw records, and only ever True when they clearly say so."""
    return (
        isinstance(raw, dict)
        and isinstance(status, dict)
        and bool(raw.get("node"))
        and raw.get("node") not in draining
        and raw.get("migration") not in draining
        and status.get("node") == raw.get("node")
        and status.get("phase") == VMPhase.RUNNING.value
        and isinstance(obj, dict)
        and not obj.get("metadata", {}).get("deletionTimestamp")
        and (obj.get("spec") or {}).get("runStrategy") != RunStrategy.HALTED.value
    )


@dataclass
class _Move:
    vm: VirtualMachine
    placement: Placement


class DrainController:
    def __init__(self, store: Store, node: str, epoch: int, scheduler: Scheduler) -> None:
        self.store = store
        self.node = node
        self.epoch = epoch
        self.scheduler = scheduler
        self.events = EventLog(store)
        self.controller = Controller(
            "drain", self.reconcile, workers=1, list_keys=scheduler.nodes.keys
        )
        # The scheduler's caches, so the primary keeps one watch per kind.
        scheduler.nodes.add_listener(self.controller.enqueue)
        scheduler.vms.add_listener(self._on_vm)
        # VMs told about in a FlushBlocked event (once per flush, not per retry).
        self._blocked: set[str] = set()
        # (VM, start of its failed live migration) -> when a flush may try it again.
        self._failed_until: dict[tuple[str, str], float] = {}
        self._written: dict[str, Placement] = {}
        # Nodes in a flush or unflush, as their last reconcile found them.
        self._draining: set[str] = set()
        self._lock = threading.Lock()

    def start(self) -> None:
        self.controller.start()
        for name in self.scheduler.nodes.keys():  # noqa: SIM118 (an informer, not a dict)
            self.controller.enqueue(name)

    def stop(self) -> None:
        self.controller.stop()

    def _on_vm(self, _vm: str) -> None:
        # Only nodes in a flush or unflush care about VM moves; there are few of them, kept
        # by reconcile (which every node event runs), so a VM event reads no node at all.
        with self._lock:
            draining = list(self._draining)
        for node in draining:
            self.controller.enqueue(node)

    # -- reading the caches ----------------------------------------------------

    def _placements(self) -> list[_Move]:
        """The VMs a flush or unflush acts on or waits for, with their placements: placed
        on a draining node, or moved by a flush or unflush. Our own writes the cache has
        not shown yet included (a reconcile woken by another VM's event must not count a
        moved VM twice). Every VM is looked at by its raw placement only: parsing 10,000
        VMs on every VM event of a flush made it O(VMs) per step (issue 16)."""
        with self._lock:
            draining = set(self._draining)
        moves = []
        vms = self.scheduler.vms
        for name in vms.keys():  # noqa: SIM118 (an informer, not a dict)
            raw = vms.placement_raw(name)
            with self._lock:
                written = self._written.get(name)
            if not _concerns(raw, draining) and (
                written is None or not _concerns(written.wire(), draining)
            ):
                continue
            if written is None and _settled_elsewhere(
                raw, vms.data(name), vms.data(name, paths.STATUS), draining
            ):
                continue
            vm = vms.get(name)
            if vm is None:
                continue
            cached = Placement.model_validate(raw) if raw is not None else None
            with self._lock:
                written = self._written.get(name)
                if written is not None and cached is not None and cached.wire() == written.wire():
                    del self._written[name]  # the cache caught up
                    written = None
            placement = written or cached
            if placement is not None:
                moves.append(_Move(vm, placement))
        return moves

    @staticmethod
    def _settled(move: _Move) -> bool:
        """The VM is where its placement says, or stopped for good: its move is over."""
        status = move.vm.status
        if status is None:
            return False
        if status.phase == VMPhase.STOPPED:
            return True  # e.g. a guest that shut itself down under RerunOnFailure
        if move.placement.node is None or move.vm.spec.run_strategy == RunStrategy.HALTED:
            return status.phase in (VMPhase.PENDING, VMPhase.FAILED)
        return status.node == move.placement.node and status.phase in (
            VMPhase.RUNNING,
            VMPhase.FAILED,
        )

    def _in_flight(self, moves: list[_Move]) -> list[_Move]:
        return [
            m
            for m in moves
            if m.placement.reason in (PLACEMENT_FLUSH, PLACEMENT_UNFLUSH) and not self._settled(m)
        ]

    def _limits(self) -> tuple[int, int]:
        cluster = self.scheduler.clusters.get(CLUSTER_NAME)
        if cluster is None:
            return 4, 1
        limits = cluster.spec.migration.max_parallel
        return limits.cluster, limits.per_node

    # -- the reconcile -------------------------------------------------------------

    def reconcile(self, name: str) -> float | None:
        if not self.store.connected:
            return 1.0
        node = self.scheduler.nodes.get(name)
        draining = node is not None and (node.spec.drain or _in_drain(node))
        with self._lock:
            if draining:
                self._draining.add(name)
            else:
                self._draining.discard(name)
        if node is None or not draining:
            return None  # every heartbeat lands here: a ready node costs nothing more
        moves = self._placements()
        if node.spec.drain:
            return self._flush(node, moves)
        return self._unflush(node, moves)

    def _flush(self, node: Node, moves: list[_Move]) -> float | None:
        here = sorted((m for m in moves if m.placement.node == node.name), key=lambda m: m.vm.name)
        leaving = [
            m
            for m in self._in_flight(moves)
            if m.placement.reason == PLACEMENT_FLUSH and m.placement.migration == node.name
        ]
        # A fenced node runs nothing, whatever its last heartbeat said.
        still_running = set(
            node.status.domains
            if node.status and node.status.daemon_state != DaemonState.FENCED
            else ()
        )
        if not here and not leaving and not still_running:
            # The truth, not a heartbeat (which lists running domains only, not one still
            # shutting down): no VM held there any more.
            held = Holders(self.store).held_by(node.name)
            if held:
                log.info("event=flush_waiting node=%s held=%s", node.name, ",".join(held[:10]))
                return 1.0
            self._set_domain_state(node, DomainState.FLUSHED, "Flushed", "no VMs left")
            return None
        self._set_domain_state(
            node, DomainState.FLUSHING, "Flushing", "moving its VMs to other nodes"
        )
        if here and not self._step(node, here, moves, flush=True):
            return 1.0
        return RESYNC

    def _unflush(self, node: Node, moves: list[_Move]) -> float | None:
        away = sorted(
            (
                m
                for m in moves
                if m.placement.reason == PLACEMENT_FLUSH and m.placement.migration == node.name
            ),
            key=lambda m: m.vm.name,
        )
        returning = [
            m
            for m in self._in_flight(moves)
            if m.placement.reason == PLACEMENT_UNFLUSH and m.placement.node == node.name
        ]
        if not away and not returning:
            self._set_domain_state(node, DomainState.READY, "Ready", "takes VMs")
            return None
        self._set_domain_state(
            node, DomainState.UNFLUSHING, "Unflushing", "bringing back the VMs a flush moved"
        )
        # Moves the flush wrote whose VM still runs here (not begun, or a live migration in
        # flight, which its source then aborts): undone at once, whatever the limits.
        staying = [m for m in away if m.vm.status is not None and m.vm.status.node == node.name]
        if staying:
            self._cancel(node, staying)
            away = [m for m in away if m not in staying]
        if away and node.name in self.scheduler.ready_nodes():
            if not self._step(node, away, moves, flush=False):
                return 1.0
        return RESYNC

    def _step(
        self, node: Node, candidates: list[_Move], moves: list[_Move], *, flush: bool
    ) -> bool:
        """Move what the limits allow, under the handover read lock; False: try later."""
        lock = handover_read_lock(self.store, self.node)
        try:
            if not lock.acquire(timeout=2.0):
                return False
        except LockTimeout:
            log.info("event=drain_waiting reason=handover node=%s", node.name)
            return False
        try:
            if self.store.read_epoch(sync=True) != self.epoch:
                log.warning("event=drain_aborted reason=epoch_moved epoch=%d", self.epoch)
                return False
            cluster_limit, node_limit = self._limits()
            in_flight = self._in_flight(moves)
            for move in candidates:
                if len(in_flight) >= cluster_limit:
                    break
                if sum(1 for m in in_flight if node.name in _ends(m)) >= node_limit:
                    break
                target = (
                    self._move_away(node, move, in_flight, node_limit)
                    if flush
                    else (self._bring_back(node, move))
                )
                if target is not None:
                    in_flight.append(target)
            return True
        except EpochMoved:
            log.warning("event=drain_aborted reason=epoch_moved epoch=%d", self.epoch)
            return False
        finally:
            release(lock, self.node)

    def _cancel(self, node: Node, staying: list[_Move]) -> None:
        lock = handover_read_lock(self.store, self.node)
        try:
            if not lock.acquire(timeout=2.0):
                return
        except LockTimeout:
            return
        try:
            for move in staying:
                back = Placement(node=node.name, reason=PLACEMENT_UNFLUSH, migration=None)
                if self._write(move.vm, back, only_from=move.placement.node):
                    self.events.record(
                        VirtualMachine.KIND,
                        move.vm.name,
                        "FlushCancelled",
                        f"unflush of {node.name}: stays there (its move to "
                        f"{move.placement.node or 'no node'} had not completed)",
                        source=self.node,
                    )
        except EpochMoved:
            log.warning("event=drain_aborted reason=epoch_moved epoch=%d", self.epoch)
        finally:
            release(lock, self.node)

    def _live_failed(self, node: Node, vm: VirtualMachine) -> bool:
        """Its live migration away from ``node`` failed for good lately: not yet again."""
        migration = vm.status.migration if vm.status is not None else None
        if migration is None or migration.state != MigrationState.FAILED:
            return False
        if migration.source != node.name:
            return False
        key = (vm.name, migration.started)
        now = time.monotonic()
        until = self._failed_until.get(key)
        if until is None:
            until = self._failed_until[key] = now + FAILED_RETRY
            self.events.record(
                VirtualMachine.KIND,
                vm.name,
                "FlushBlocked",
                f"cannot leave {node.name} now: {migration.last_error or 'live migration failed'}; "
                f"trying again in {FAILED_RETRY:g}s",
                type_="Warning",
                source=self.node,
            )
        return now < until

    def _move_away(
        self, node: Node, move: _Move, in_flight: list[_Move], node_limit: int
    ) -> _Move | None:
        """Place the VM elsewhere; the move written, or None when it cannot go (yet)."""
        vm = move.vm
        if vm.deleting:
            return None  # Terminating: its node shuts it down, then it is gone from here
        if vm.spec.run_strategy == RunStrategy.HALTED:
            target, why = None, "halted: unplaced until the node is back"
        elif self._live_failed(node, vm):
            return None
        elif (bound := self.scheduler.bound_to(vm)) is not None and bound.node == node.name:
            why = (
                f"its disk {bound.disk} is volume {bound.volume} in local pool {bound.pool} "
                f"on {node.name}: stop it (runStrategy Halted) or delete it to complete the flush"
            )
            self._hold(vm, node, why)
            return None
        else:
            target, why = self.scheduler.choose(vm, exclude=frozenset({node.name}))
            if target is not None and sum(1 for m in in_flight if target in _ends(m)) >= node_limit:
                return None  # that node already takes as many moves as it may
            if target is None and vm.spec.autostart:
                target, why = None, f"{why}; autostart: shut down, started here after the unflush"
            elif target is None:
                self._hold(vm, node, why)
                return None
        self._blocked.discard(vm.name)
        new = Placement(node=target, reason=PLACEMENT_FLUSH, migration=node.name)
        if not self._write(vm, new, only_from=move.placement.node):
            return None
        how = (
            f"a {vm.spec.migration.method.value} move"
            if target is not None
            else "shut down"
            if vm.spec.run_strategy != RunStrategy.HALTED
            else "stays off"
        )
        self.events.record(
            VirtualMachine.KIND,
            vm.name,
            "Flushing",
            f"flush of {node.name}: to {target or 'no node'} ({why}); {how}",
            source=self.node,
        )
        return _Move(vm, new)

    def _hold(self, vm: VirtualMachine, node: Node, why: str) -> None:
        """``vm`` cannot leave ``node``: it holds the flush (one FlushBlocked event)."""
        if vm.name not in self._blocked:
            self._blocked.add(vm.name)
            self.events.record(
                VirtualMachine.KIND,
                vm.name,
                "FlushBlocked",
                f"cannot leave {node.name}: {why}",
                type_="Warning",
                source=self.node,
            )
        log.info("event=flush_blocked vm=%s node=%s why=%r", vm.name, node.name, why)

    def _bring_back(self, node: Node, move: _Move) -> _Move | None:
        vm = move.vm
        if vm.deleting:
            return None  # Terminating: it goes, it does not come back
        loads = self.scheduler.node_loads({node.name: node})
        memory = to_bytes(vm.spec.memory)
        halted = vm.spec.run_strategy == RunStrategy.HALTED
        allowed = vm.spec.placement.nodes
        why = None
        if allowed and node.name not in allowed:
            why = f"{node.name} is no longer among its allowed nodes {allowed}"
        elif not halted and loads[node.name].memory_free < memory:
            free = loads[node.name].memory_free // 2**20
            why = f"does not fit on {node.name} ({free} MiB free, needs {memory // 2**20} MiB)"
        if why is not None:
            # Left where it is as a manual migration, so `vm unmigrate` can still return it.
            self._write(
                vm,
                move.placement.model_copy(update={"reason": PLACEMENT_MIGRATE}),
                only_from=move.placement.node,
            )
            self.events.record(
                VirtualMachine.KIND,
                vm.name,
                "UnflushSkipped",
                f"{why}; left on {move.placement.node or 'no node'}",
                type_="Warning",
                source=self.node,
            )
            return None
        new = Placement(node=node.name, reason=PLACEMENT_UNFLUSH, migration=None)
        if not self._write(vm, new, only_from=move.placement.node):
            return None
        self.events.record(
            VirtualMachine.KIND,
            vm.name,
            "Unflushing",
            f"back to {node.name} from {move.placement.node or 'no node'}",
            source=self.node,
        )
        return _Move(vm, new)

    def _write(self, vm: VirtualMachine, placement: Placement, only_from: str | None) -> bool:
        """Write the move, compare-and-set against the placement it was decided on (a user's
        migrate or a recovery written since wins); False when it was not written."""
        placement = placement.model_copy(update={"epoch": self.epoch})
        try:
            self.store.write_placement(vm.name, placement, epoch=self.epoch, only_from=only_from)
        except NotFound:
            return False
        except PlacementMoved as exc:
            log.info("event=drain_move_skipped vm=%s reason=%r", vm.name, str(exc))
            return False
        with self._lock:
            self._written[vm.name] = placement
        self.scheduler.assume(vm.name, placement.node)
        log.info(
            "event=drain_placed vm=%s node=%s reason=%s origin=%s",
            vm.name,
            placement.node,
            placement.reason,
            placement.migration,
        )
        return True

    def _set_domain_state(self, node: Node, state: DomainState, reason: str, message: str) -> None:
        current = node.status or NodeStatus()
        drained = state == DomainState.FLUSHED
        condition = next((c for c in current.conditions if c.type == "Drained"), None)
        if (
            current.domain_state == state
            and condition is not None
            and condition.reason == reason
            and condition.message == message
        ):
            return

        stored: list[DomainState] = []

        def change(raw: object) -> NodeStatus | None:
            status = NodeStatus.model_validate(raw or {})
            stored.append(status.domain_state)
            status.domain_state = state
            status.conditions = set_condition(
                status.conditions, "Drained", drained, reason, message
            )
            return status

        try:
            self.store.update_status(Node, node.name, change)
        except NotFound:
            return
        # Told once per change of what is stored (the cache may lag our own last write).
        if stored and stored[-1] != state:
            log.info("event=domain_state node=%s state=%s", node.name, state.value)
            self.events.record(Node.KIND, node.name, reason, message, source=self.node)
