"""The drain controller (primary only): flush and unflush nodes.

A flush (``Node.spec.drain`` true) moves every VM placed on the node to the
node the scheduler would choose without it, a few at a time
(``Cluster.spec.migration.maxParallel``), records where each came from in
``placement.migration``, and marks the node ``flushed`` once nothing runs
there. An unflush (drain false) brings those VMs back the same way and marks
it ``ready``. Moves are shutdown moves: the target starts a VM only after the
source has stopped it, so one VM never runs twice.

Each step that writes placements holds the read side of the handover lock,
so a flush requested during a takeover waits for the new primary, and a
handover waits for the step in flight.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from kazoo.exceptions import LockTimeout

from controllers.runtime import Controller
from controllers.scheduler import Scheduler
from schemas import (
    CLUSTER_NAME,
    DaemonState,
    DomainState,
    Node,
    NodeStatus,
    Placement,
    RunStrategy,
    VirtualMachine,
    VMPhase,
    set_condition,
    to_bytes,
)
from schemas.verbs import PLACEMENT_FLUSH, PLACEMENT_UNFLUSH
from zkstore import EpochMoved, NotFound, Store, handover_read_lock
from zkstore.events import EventLog

log = logging.getLogger(__name__)

RESYNC = 5.0
"""Seconds between looks at a node whose flush or unflush is under way (VM events
also wake it; this covers a move that produces none, e.g. a VM that fits nowhere)."""


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
        self._blocked: dict[str, str] = {}

    def start(self) -> None:
        self.controller.start()
        for name in self.scheduler.nodes.keys():  # noqa: SIM118 (an informer, not a dict)
            self.controller.enqueue(name)

    def stop(self) -> None:
        self.controller.stop()

    def _on_vm(self, _vm: str) -> None:
        # Only nodes in a flush or unflush care about VM moves; there are few of them.
        for node in self.scheduler.nodes.objects():
            if node.spec.drain or (node.status and node.status.domain_state != DomainState.READY):
                self.controller.enqueue(node.name)

    # -- reading the caches ----------------------------------------------------

    def _placements(self) -> list[_Move]:
        moves = []
        for vm in self.scheduler.vms.objects():
            raw = self.scheduler.vms.placement_raw(vm.name)
            if raw is not None:
                moves.append(_Move(vm, Placement.model_validate(raw)))
        return moves

    @staticmethod
    def _settled(move: _Move) -> bool:
        """The VM is where its placement says, or stopped for good: its move is over."""
        status = move.vm.status
        if status is None:
            return False
        if move.placement.node is None or move.vm.spec.run_strategy == RunStrategy.HALTED:
            return status.phase in (VMPhase.STOPPED, VMPhase.PENDING, VMPhase.FAILED)
        return status.node == move.placement.node and status.phase in (
            VMPhase.RUNNING,
            VMPhase.STOPPED,
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
        if node is None:
            return None
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
            self._set_domain_state(node, DomainState.FLUSHED, "Flushed", "no VMs left")
            return None
        self._set_domain_state(
            node,
            DomainState.FLUSHING,
            "Flushing",
            f"{len(here)} VM(s) to move, {len(leaving)} moving",
        )
        if here:
            budget = self._budget(node.name, moves)
            if budget > 0 and not self._step(node, here[:budget], flush=True):
                return 1.0
        return RESYNC

    def _unflush(self, node: Node, moves: list[_Move]) -> float | None:
        status = node.status or NodeStatus()
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
            if status.domain_state != DomainState.READY:
                self._set_domain_state(node, DomainState.READY, "Ready", "takes VMs")
            return None
        self._set_domain_state(
            node,
            DomainState.UNFLUSHING,
            "Unflushing",
            f"{len(away)} VM(s) to bring back, {len(returning)} returning",
        )
        if away and node.name in self.scheduler.ready_nodes():
            budget = self._budget(node.name, moves)
            if budget > 0 and not self._step(node, away[:budget], flush=False):
                return 1.0
        return RESYNC

    def _budget(self, node: str, moves: list[_Move]) -> int:
        cluster_limit, node_limit = self._limits()
        in_flight = self._in_flight(moves)
        touching = [m for m in in_flight if node in (m.placement.node, m.placement.migration)]
        return max(0, min(cluster_limit - len(in_flight), node_limit - len(touching)))

    def _step(self, node: Node, batch: list[_Move], *, flush: bool) -> bool:
        """Write one batch of placements under the handover read lock; False: try later."""
        lock = handover_read_lock(self.store, self.node)
        try:
            lock.acquire(timeout=2.0)
        except LockTimeout:
            log.info("event=drain_waiting reason=handover node=%s", node.name)
            return False
        try:
            if self.store.read_epoch(sync=True) != self.epoch:
                log.warning("event=drain_aborted reason=epoch_moved epoch=%d", self.epoch)
                return False
            for move in batch:
                if flush:
                    self._move_away(node, move)
                else:
                    self._bring_back(node, move)
            return True
        except EpochMoved:
            log.warning("event=drain_aborted reason=epoch_moved epoch=%d", self.epoch)
            return False
        finally:
            lock.release()

    def _move_away(self, node: Node, move: _Move) -> None:
        vm = move.vm
        if vm.spec.run_strategy == RunStrategy.HALTED:
            target, why = None, "halted: unplaced until the node is back"
        else:
            target, why = self.scheduler.choose(vm, exclude=frozenset({node.name}))
            if target is None:
                if self._blocked.get(vm.name) != why:
                    self._blocked[vm.name] = why
                    self.events.record(
                        VirtualMachine.KIND,
                        vm.name,
                        "FlushBlocked",
                        f"cannot leave {node.name}: {why}",
                        type_="Warning",
                        source=self.node,
                    )
                log.info("event=flush_blocked vm=%s node=%s why=%r", vm.name, node.name, why)
                return
        self._blocked.pop(vm.name, None)
        # Keep the first origin across repeated moves, so unflush goes back there.
        origin = move.placement.migration or node.name
        self._write(vm, Placement(node=target, reason=PLACEMENT_FLUSH, migration=origin))
        self.events.record(
            VirtualMachine.KIND,
            vm.name,
            "Flushing",
            f"flush of {node.name}: to {target or 'no node'} ({why}); "
            "a shutdown move (live migration is not available yet)",
            source=self.node,
        )

    def _bring_back(self, node: Node, move: _Move) -> None:
        vm = move.vm
        loads = self.scheduler.node_loads({node.name: node})
        memory = to_bytes(vm.spec.memory)
        halted = vm.spec.run_strategy == RunStrategy.HALTED
        if not halted and loads[node.name].memory_free < memory:
            why = f"{loads[node.name].memory_free // 2**20} MiB free, needs {memory // 2**20} MiB"
            # Left where it is as a manual migration, so `vm unmigrate` can still return it.
            self._write(
                vm, move.placement.model_copy(update={"reason": "migrate", "epoch": self.epoch})
            )
            self.events.record(
                VirtualMachine.KIND,
                vm.name,
                "UnflushSkipped",
                f"does not fit on {node.name} ({why}); left on {move.placement.node}",
                type_="Warning",
                source=self.node,
            )
            return
        self._write(vm, Placement(node=node.name, reason=PLACEMENT_UNFLUSH, migration=None))
        self.events.record(
            VirtualMachine.KIND,
            vm.name,
            "Unflushing",
            f"back to {node.name} from {move.placement.node or 'no node'}",
            source=self.node,
        )

    def _write(self, vm: VirtualMachine, placement: Placement) -> None:
        placement = placement.model_copy(update={"epoch": self.epoch})
        try:
            self.store.write_placement(vm.name, placement, epoch=self.epoch)
        except NotFound:
            return
        self.scheduler.assume(vm.name, placement.node)
        log.info(
            "event=drain_placed vm=%s node=%s reason=%s origin=%s",
            vm.name,
            placement.node,
            placement.reason,
            placement.migration,
        )

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

        def change(raw: object) -> NodeStatus | None:
            status = NodeStatus.model_validate(raw or {})
            status.domain_state = state
            status.conditions = set_condition(
                status.conditions, "Drained", drained, reason, message
            )
            return status

        try:
            self.store.update_status(Node, node.name, change)
        except NotFound:
            return
        if current.domain_state != state:
            log.info("event=domain_state node=%s state=%s", node.name, state.value)
            self.events.record(Node.KIND, node.name, reason, message, source=self.node)
