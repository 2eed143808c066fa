"""First placements of many VMs in one ZooKeeper transaction, and the group commit that
gathers them (issue 16).

A new VM's placement is two creates (the placement znode under the VM, the entry in its
node's index) after a check of the cluster epoch. Written one VM at a time, 10,000 VMs
are 10,000 transactions, each waiting for ZooKeeper's log to be synced; measured here, one
transaction of 64 creates costs about as much as four single ones. So the scheduler's
workers hand their placements to a :class:`GroupCommit`: whichever worker finds no commit
in flight writes everything queued so far in one transaction, and the others wait for
its outcome.

The safety of each placement is that of ``Store.write_placement(only_if_unplaced=True)``:
the epoch check makes a deposed primary's batch fail whole (EpochMoved for every VM in
it); a VM placed meanwhile, or deleted, makes its create fail, and then, ZooKeeper
transactions being all or nothing, the batch is written again one VM at a time, so each
VM gets exactly the outcome a single write would give it (AlreadyPlaced, NotFound, ...).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from kazoo.exceptions import BadVersionError, NoNodeError, RolledBackError

from schemas import Placement
from zkstore import paths
from zkstore.codec import encode
from zkstore.errors import EpochMoved, raise_if_refused
from zkstore.store import Store

log = logging.getLogger(__name__)

MAX_BATCH = 64
"""Placements per transaction: 128 creates of some 200 bytes, far below ZooKeeper's
1 MB request limit."""


def place_new(store: Store, batch: list[tuple[str, Placement]], *, epoch: int) -> None:
    """Create the placements of VMs never placed, all in one transaction checked against
    ``epoch``. Raises EpochMoved when the epoch moved (nothing written), and
    ``BatchRefused`` when another create failed (nothing written: write them one by one)."""
    txn = store.client.transaction()
    txn.check(store.path(paths.EPOCH), version=epoch)
    for vm, placement in batch:
        assert placement.node, "place_new writes placements on a node"
        data = encode(placement.wire())
        txn.create(store.path(paths.placement(vm)), data)
        txn.create(store.path(paths.node_index_entry(placement.node, vm)), data)
    for node in {p.node for _, p in batch if p.node}:
        store.ensure_node_index(node)
    results = txn.commit()
    failures = [
        r for r in results if isinstance(r, Exception) and not isinstance(r, RolledBackError)
    ]
    if not failures:
        return
    raise_if_refused(failures)
    if isinstance(results[0], BadVersionError | NoNodeError):
        raise EpochMoved(f"{len(batch)} placements refused: the cluster epoch moved past {epoch}")
    refused = {(i - 1) // 2 for i, r in enumerate(results) if i and _failed(r)}
    raise BatchRefused(failures[0], sorted(refused))


def _failed(result: object) -> bool:
    return isinstance(result, Exception) and not isinstance(result, RolledBackError)


class BatchRefused(Exception):
    """A create of a batch failed (a VM placed or deleted meanwhile): nothing was written.
    ``refused``: the indexes in the batch of the VMs whose create failed."""

    def __init__(self, first: Exception, refused: list[int]) -> None:
        super().__init__(repr(first))
        self.refused = refused


@dataclass
class _Item:
    vm: str
    placement: Placement
    done: bool = False
    error: BaseException | None = None


class GroupCommit:
    """Write new placements together: ``write`` returns once its placement is written, or
    raises what ``Store.write_placement(only_if_unplaced=True)`` would raise for it."""

    def __init__(self, store: Store, epoch: int, *, max_batch: int = MAX_BATCH) -> None:
        self.store = store
        self.epoch = epoch
        self.max_batch = max_batch
        self._cond = threading.Condition()
        self._pending: list[_Item] = []
        self._committing = False

    def write(self, vm: str, placement: Placement, timeout: float = 60.0) -> None:
        item = _Item(vm, placement)
        deadline = time.monotonic() + timeout
        with self._cond:
            self._pending.append(item)
        while True:
            with self._cond:
                while not item.done and self._committing:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        # Still queued: take it out, so it is never written after we gave up.
                        if item in self._pending:
                            self._pending.remove(item)
                            raise TimeoutError(f"placement of {vm!r} not written in {timeout:g} s")
                    self._cond.wait(max(left, 0.05))
                if item.done:
                    break
                self._committing = True
                batch = self._pending[: self.max_batch]
                del self._pending[: self.max_batch]
            try:
                self._commit(batch)
            finally:
                with self._cond:
                    self._committing = False
                    self._cond.notify_all()
        if item.error is not None:
            raise item.error

    def _commit(self, batch: list[_Item], *, again: bool = True) -> None:
        started = time.monotonic()
        try:
            place_new(self.store, [(i.vm, i.placement) for i in batch], epoch=self.epoch)
        except BatchRefused as exc:
            # The VMs whose create failed are written alone (each gets the error a single
            # write gives it); the others go together once more, then one by one.
            alone = [batch[i] for i in exc.refused] if again else batch
            rest = [item for item in batch if item not in alone]
            log.info(
                "event=placement_batch_refused size=%d refused=%s first_failure=%s",
                len(batch),
                ",".join(item.vm for item in alone),
                exc,
            )
            for item in alone:
                try:
                    self.store.write_placement(
                        item.vm, item.placement, epoch=self.epoch, only_if_unplaced=True
                    )
                except BaseException as error:
                    item.error = error
                item.done = True
            if rest:
                self._commit(rest, again=False)
            return
        except BaseException as error:
            for item in batch:
                item.error, item.done = error, True
            return
        for item in batch:
            item.done = True
        log.debug(
            "event=placement_batch size=%d seconds=%.3f", len(batch), time.monotonic() - started
        )


__all__ = ["MAX_BATCH", "BatchRefused", "GroupCommit", "place_new"]
