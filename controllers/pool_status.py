"""The storage-pool status controller (primary only): each StoragePool's status gathers what
every node reports of it (Node.status.storage): reachable or not and why, capacity and
free space, and a Ready condition (reached by at least one node)."""

from __future__ import annotations

import logging
import threading
import time

from controllers.runtime import Controller
from controllers.scheduler import Scheduler
from schemas import (
    GONE_STATES,
    PoolNodeState,
    PoolType,
    StoragePool,
    StoragePoolStatus,
    set_condition,
)
from zkstore import NotFound, ResourceInformer, Store

log = logging.getLogger(__name__)

SPACE_REFRESH = 60.0
"""Seconds between writes of a pool's status when only its space numbers changed. A shared
pool's free bytes move with every write to it, and every node reports them at every
heartbeat: written each time, the status changed several times a second on 64 nodes, and
every node's storage prober re-read it (issue 16)."""
SPACE_STEP = 0.01
"""A space number that moved by more than this share of the capacity is written at once."""
NODE_REPORT_DELAY = 1.0
"""How long after a node's report a pool's status is gathered (reports meanwhile: once)."""


def _shape(status: StoragePoolStatus) -> tuple[object, ...]:
    """Everything in a pool's status but its space numbers (and condition timestamps)."""
    return (
        status.observed_generation,
        [(n.node, n.reachable, n.message) for n in status.nodes],
        [(c.type, c.status, c.reason, c.message) for c in status.conditions],
        status.capacity is None,
        status.free is None,
    )


def _space_change(wanted: StoragePoolStatus, current: StoragePoolStatus) -> str:
    """ "none", "drift" (numbers differ, each by at most SPACE_STEP of its capacity) or
    "moved"."""
    pairs = [(wanted.capacity, wanted.free, current.capacity, current.free)] + [
        (w.capacity, w.free, c.capacity, c.free)
        for w, c in zip(wanted.nodes, current.nodes, strict=True)
    ]
    change = "none"
    for capacity, free, old_capacity, old_free in pairs:
        if (capacity, free) == (old_capacity, old_free):
            continue
        change = "drift"
        step = SPACE_STEP * max(capacity or 0, old_capacity or 0, 1)
        for new, old in ((capacity, old_capacity), (free, old_free)):
            if (new is None) != (old is None) or abs((new or 0) - (old or 0)) > step:
                return "moved"
    return change


class PoolStatusController:
    def __init__(self, store: Store, node: str, epoch: int, scheduler: Scheduler) -> None:
        self.store = store
        self.node = node
        self.epoch = epoch
        self.scheduler = scheduler
        self.pools: ResourceInformer[StoragePool] = ResourceInformer(
            store, StoragePool, lambda key: self.controller.enqueue(key)
        )
        self.controller = Controller(
            "pool-status", self.reconcile, workers=1, resync_period=30.0, list_keys=self._keys
        )
        # Every heartbeat of every node changes a Node (64 nodes: ~13 a second), and each
        # gather reads every node: a pool's status follows its nodes' reports within
        # NODE_REPORT_DELAY instead, the heartbeats of that time gathered once.
        scheduler.nodes.add_listener(lambda _node: self._enqueue_all(NODE_REPORT_DELAY))
        self._written: dict[str, float] = {}  # pool -> monotonic time of its last write
        self._lock = threading.Lock()
        self._due: set[str] = set()  # pools a node report enqueued, not reconciled yet

    def _keys(self) -> set[str]:
        return set(self.pools.keys())

    def _enqueue_all(self, delay: float = 0.0) -> None:
        for name in self._keys():
            if delay <= 0:
                self.controller.enqueue(name)
                continue
            with self._lock:
                if name in self._due:
                    continue  # already coming: this report is read then too
                self._due.add(name)
            self.controller.enqueue_after(name, delay)

    def start(self) -> None:
        self.controller.start()
        self.pools.start()
        self._enqueue_all()

    def stop(self) -> None:
        self.controller.stop()
        self.pools.close()

    def reconcile(self, name: str) -> float | None:
        with self._lock:
            self._due.discard(name)  # a node report from now on enqueues it again
        if not self.store.connected:
            return 1.0
        pool = self.pools.get(name)
        if pool is None:
            return None
        current = pool.status or StoragePoolStatus()
        wanted = self.gather(pool, current)
        change = _space_change(wanted, current) if _shape(wanted) == _shape(current) else "shape"
        if change == "none":
            return None
        if change == "drift":
            # Only the space numbers drifted: written at most every SPACE_REFRESH.
            wait = self._written.get(name, -SPACE_REFRESH) + SPACE_REFRESH - time.monotonic()
            if wait > 0:
                return wait
        try:
            self.store.write_status(StoragePool, name, wanted)
        except NotFound:
            return None
        self._written[name] = time.monotonic()
        log.info(
            "event=pool_status pool=%s reached_by=%d/%d",
            name,
            sum(1 for n in wanted.nodes if n.reachable),
            len(wanted.nodes),
        )
        return None

    def gather(self, pool: StoragePool, current: StoragePoolStatus) -> StoragePoolStatus:
        states = []
        for node_name in sorted(self.scheduler.nodes.keys()):
            node = self.scheduler.nodes.get(node_name)
            status = node.status if node is not None else None
            seen = (
                next((p for p in status.storage if p.pool == pool.name), None) if status else None
            )
            if status is not None and status.daemon_state in GONE_STATES:
                states.append(
                    PoolNodeState(
                        node=node_name,
                        reachable=False,
                        message=f"node is {status.daemon_state.value}",
                    )
                )
            elif seen is None:
                states.append(
                    PoolNodeState(node=node_name, reachable=False, message="not reported yet")
                )
            else:
                states.append(
                    PoolNodeState(
                        node=node_name,
                        reachable=seen.reachable,
                        capacity=seen.capacity,
                        free=seen.free,
                        message=seen.message,
                    )
                )
        reaching = [s for s in states if s.reachable]
        # One storage seen from many nodes (shared, rbd): its space; local: per node only.
        whole = pool.spec.type != PoolType.LOCAL and reaching
        capacity = max((s.capacity or 0 for s in reaching), default=None) if whole else None
        free = max((s.free or 0 for s in reaching), default=None) if whole else None
        ready = bool(reaching)
        message = (
            f"reached by {len(reaching)} of {len(states)} nodes"
            if ready
            else "reached by no node: " + "; ".join(f"{s.node}: {s.message}" for s in states)[:500]
        )
        conditions = set_condition(
            current.conditions, "Ready", ready, "Reachable" if ready else "Unreachable", message
        )
        return StoragePoolStatus(
            observed_generation=pool.metadata.generation,
            conditions=conditions,
            nodes=states,
            capacity=capacity,
            free=free,
        )
