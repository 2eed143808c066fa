"""The one-copy rule's record: per VM, the set of nodes that may still hold its domain.

A node adds itself (``claim``) in one transaction that checks its placement is
unchanged, before it defines or starts anything; it starts the domain only while
it is the sole holder (read after a sync); it removes itself (``release``) only
once it has seen its domain gone. The primary removes a node only after that
node's power-off was confirmed (``release_node``). Status fields and caches never
enter these decisions. docs/ha.md has the whole protocol.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

from kazoo.exceptions import (
    BadVersionError,
    NodeExistsError,
    NoNodeError,
    NotEmptyError,
    RolledBackError,
)

from zkstore import paths
from zkstore.store import Store

log = logging.getLogger(__name__)

_RETRIES = 8


@dataclass(frozen=True)
class Claim:
    placed: bool
    """False: the VM's placement no longer names this node, so nothing was claimed."""
    holders: frozenset[str]
    """Every holder as of now (after a sync), this node included when placed."""

    def others(self, node: str) -> list[str]:
        return sorted(self.holders - {node})


class Holders:
    """The holder sets of all VMs, over one Store (a kazoo-style recipe)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.client = store.client

    def claim(self, vm: str, node: str) -> Claim:
        """Add ``node`` to ``vm``'s holders, only while ``vm`` is placed on ``node``."""
        entry = self.store.path(paths.node_index_entry(node, vm))
        mine = self.store.path(paths.holder(vm, node))
        for _ in range(_RETRIES):
            self.client.sync(entry)
            stat = self.client.exists(entry)
            if stat is None:
                return Claim(placed=False, holders=self.read(vm))
            if self.client.exists(mine) is not None:
                # Already a holder; the placement was checked when it was added and the
                # node never leaves the set while its domain may exist.
                return Claim(placed=True, holders=self.read(vm))
            self.client.ensure_path(self.store.path(paths.holders(vm)))
            txn = self.client.transaction()
            txn.check(entry, version=stat.version)
            txn.create(mine, b"")
            results = txn.commit()
            failures = [
                r
                for r in results
                if isinstance(r, Exception) and not isinstance(r, RolledBackError)
            ]
            if not failures:
                log.info("event=holder_added vm=%s node=%s", vm, node)
                return Claim(placed=True, holders=self.read(vm))
            if any(isinstance(r, NodeExistsError) for r in failures):
                continue  # added by another worker of this node in between
            if any(isinstance(r, BadVersionError | NoNodeError) for r in failures):
                continue  # placement changed, or the set's parent was removed: read again
            raise failures[0]
        raise RuntimeError(f"claiming {vm!r} for {node!r} kept racing; gave up")

    def read(self, vm: str) -> frozenset[str]:
        """The holders as of now on the leader (after a sync), never a lagging view."""
        path = self.store.path(paths.holders(vm))
        self.client.sync(path)
        try:
            return frozenset(self.client.get_children(path))
        except NoNodeError:
            return frozenset()

    def holds(self, vm: str, node: str) -> bool:
        return self.client.exists(self.store.path(paths.holder(vm, node))) is not None

    def release(self, vm: str, node: str) -> bool:
        """``node`` no longer holds ``vm``: call only once its domain is gone. True when it
        was a holder."""
        try:
            self.client.delete(self.store.path(paths.holder(vm, node)))
        except NoNodeError:
            return False
        log.info("event=holder_removed vm=%s node=%s", vm, node)
        # Tidy the empty set; a claim racing this re-creates it.
        with contextlib.suppress(NoNodeError, NotEmptyError):
            self.client.delete(self.store.path(paths.holders(vm)))
        return True

    def held_by(self, node: str) -> list[str]:
        """The VMs ``node`` holds (after a sync)."""
        root = self.store.path(paths.HOLDERS)
        self.client.sync(root)
        try:
            vms = self.client.get_children(root)
        except NoNodeError:
            return []
        checks = [(vm, self.client.exists_async(f"{root}/{vm}/{node}")) for vm in vms]
        return sorted(vm for vm, check in checks if check.get() is not None)

    def all(self) -> dict[str, frozenset[str]]:
        """Every VM's holders (for invariant checks and describe; after a sync)."""
        root = self.store.path(paths.HOLDERS)
        self.client.sync(root)
        try:
            vms = self.client.get_children(root)
        except NoNodeError:
            return {}
        reads = [(vm, self.client.get_children_async(f"{root}/{vm}")) for vm in vms]
        result: dict[str, frozenset[str]] = {}
        for vm, read in reads:
            with contextlib.suppress(NoNodeError):
                result[vm] = frozenset(read.get())
        return result

    def release_node(self, node: str) -> list[str]:
        """Remove ``node`` from every set: only after its power-off was confirmed."""
        released = [vm for vm in self.held_by(node) if self.release(vm, node)]
        if released:
            log.warning(
                "event=holders_released_after_fence node=%s vms=%s", node, ",".join(released)
            )
        return released


def node_in_use(store: Store, node: str) -> str | None:
    """Why the Node object ``node`` must not be deleted now, or None when it may.

    A Node whose daemon holds its lease, or on which VMs are placed or may still be
    held, is in use: deleting it would make "no Node" read as "nothing runs there"."""
    reasons = []
    if store.client.exists(store.path(paths.node_lease(node))) is not None:
        reasons.append(f"its daemon is running (stop pvcnoded on {node} first)")
    placed = sorted(store.node_index(node))
    if placed:
        reasons.append(
            f"VMs are placed on it: {', '.join(placed[:10])}"
            + (f" and {len(placed) - 10} more" if len(placed) > 10 else "")
            + f" (move them away: pvcctl node flush {node} --wait)"
        )
    held = Holders(store).held_by(node)
    if held:
        reasons.append(
            f"it may still hold the domains of {', '.join(held[:10])}"
            + (f" and {len(held) - 10} more" if len(held) > 10 else "")
            + " (its daemon removes them once they are gone)"
        )
    if not reasons:
        return None
    return f"Node {node!r} is in use: " + "; ".join(reasons)
