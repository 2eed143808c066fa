"""The storage-pool status controller (primary only): each StoragePool's status gathers what
every node reports of it (Node.status.storage): reachable or not and why, capacity and
free space, and a Ready condition (reached by at least one node)."""

from __future__ import annotations

import logging

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
        scheduler.nodes.add_listener(lambda _node: self._enqueue_all())

    def _keys(self) -> set[str]:
        return set(self.pools.keys())

    def _enqueue_all(self) -> None:
        for name in self._keys():
            self.controller.enqueue(name)

    def start(self) -> None:
        self.controller.start()
        self.pools.start()
        self._enqueue_all()

    def stop(self) -> None:
        self.controller.stop()
        self.pools.close()

    def reconcile(self, name: str) -> float | None:
        if not self.store.connected:
            return 1.0
        pool = self.pools.get(name)
        if pool is None:
            return None
        current = pool.status or StoragePoolStatus()
        wanted = self.gather(pool, current)
        if wanted.model_dump(exclude={"conditions"}) == current.model_dump(
            exclude={"conditions"}
        ) and [(c.type, c.status, c.reason, c.message) for c in wanted.conditions] == [
            (c.type, c.status, c.reason, c.message) for c in current.conditions
        ]:
            return None
        try:
            self.store.write_status(StoragePool, name, wanted)
        except NotFound:
            return None
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
