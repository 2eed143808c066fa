"""The migration controller (primary only): a live migration that failed for good leaves
its VM where it runs, so the placement goes back there.

The source node gives up a live move (after its attempts, or at once when the target
cannot take it) by reporting ``status.migration.state: Failed`` while the guest runs on
there; nodes never write placements, so the primary does: compare-and-set against the
target it failed to reach, so a newer move (a user's, a drain's, a recovery's) wins.
"""

from __future__ import annotations

import logging

from controllers.runtime import Controller
from controllers.scheduler import Scheduler
from schemas import MigrationState, Placement, VMPhase
from schemas.verbs import PLACEMENT_MIGRATE
from zkstore import EpochMoved, NotFound, PlacementMoved, Store, paths
from zkstore.codec import decode

log = logging.getLogger(__name__)


class MigrationController:
    def __init__(self, store: Store, node: str, epoch: int, scheduler: Scheduler) -> None:
        self.store = store
        self.node = node
        self.epoch = epoch
        self.scheduler = scheduler
        self.controller = Controller(
            "migrations", self.reconcile, workers=1, list_keys=scheduler.vms.keys
        )
        scheduler.vms.add_listener(self.controller.enqueue)

    def start(self) -> None:
        self.controller.start()
        for name in self.scheduler.vms.keys():  # noqa: SIM118 (an informer, not a dict)
            self.controller.enqueue(name)

    def stop(self) -> None:
        self.controller.stop()

    def reconcile(self, name: str) -> float | None:
        if not self.store.connected:
            return 1.0
        # Every VM comes by here (each event, each resync): only one whose raw status holds
        # a failed migration is parsed (parsing 10,000 VMs every resync cost the primary
        # seconds of CPU once informers stopped keeping every parsed object), and only one
        # whose status has the word in it is decoded.
        data = self.scheduler.vms.raw(name, paths.STATUS)
        if data is None or b'"Failed"' not in data:
            return None
        raw = decode(data)
        migration_raw = raw.get("migration") if isinstance(raw, dict) else None
        if not isinstance(migration_raw, dict) or migration_raw.get("state") != "Failed":
            return None
        vm = self.scheduler.vms.get(name)
        status = vm.status if vm is not None else None
        migration = status.migration if status is not None else None
        if status is None or migration is None or migration.state != MigrationState.FAILED:
            return None
        if status.node != migration.source or status.phase != VMPhase.RUNNING:
            return None
        # Fresh, with its version: only the very decision that failed is undone (a user's
        # retry to the same node is a new one).
        placement, version = self.store.read_placement_versioned(name)
        if placement is None or placement.node != migration.target:
            return None  # placed back already, or moved on since
        if migration.placement_version is not None and version != migration.placement_version:
            return None
        origin = placement.migration if placement.migration != migration.source else None
        back = Placement(
            node=migration.source, epoch=self.epoch, reason=PLACEMENT_MIGRATE, migration=origin
        )
        try:
            self.store.write_placement(
                name, back, epoch=self.epoch, only_from=migration.target, only_version=version
            )
        except (NotFound, PlacementMoved) as exc:
            log.info("event=migration_revert_skipped vm=%s reason=%r", name, str(exc))
            return None
        except EpochMoved:
            log.warning("event=migration_revert_refused vm=%s reason=epoch_moved", name)
            raise
        self.scheduler.assume(name, migration.source)
        log.info(
            "event=migration_reverted vm=%s node=%s failed_target=%s error=%r",
            name,
            migration.source,
            migration.target,
            migration.last_error,
        )
        return None
