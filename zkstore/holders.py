"""The one-copy rule's record: per VM, the set of nodes that may still hold its domain.

A node adds itself (``claim``) in one transaction that checks it is placed there
as it commits, before it defines or starts anything; it starts the domain only while
it is the sole holder (read after a sync); it removes itself (``release``) only
once it has seen its domain gone. The primary removes a node only after that
node's power-off was confirmed (``release_node``). Status fields and caches never
enter these decisions. docs/ha.md has the whole protocol.
"""

from __future__ import annotations

import contextlib
import enum
import logging
from collections.abc import Callable

from kazoo.exceptions import (
    NodeExistsError,
    NoNodeError,
    NotEmptyError,
    RolledBackError,
)
from kazoo.protocol.states import WatchedEvent

from schemas import Placement
from zkstore import paths
from zkstore.codec import decode
from zkstore.store import Store

log = logging.getLogger(__name__)

_RETRIES = 8


_TO = "to-"
"""A holder entry's child ``to-<target>``: a live migration of its domain to ``target``
may be under way (``set_migrating``)."""
_FROM = "from-"
"""A holder entry's child ``from-<source>``: ``source``'s live migration may still bring
the domain here, so this entry stays (``release``)."""


class Release(enum.IntEnum):
    NOT_HELD = 0
    RELEASED = 1
    BLOCKED = 2
    """An incoming live migration's mark: the entry stays (``release``)."""


class Claim(enum.IntEnum):
    """What a claim found; false only when refused."""

    REFUSED = 0
    """Not placed on the node: nothing added."""
    ADDED = 1
    """The node was added to the set."""
    HELD = 2
    """The node was a holder already (it never leaves while its domain may exist): for a
    daemon's first claim, one held before it started."""
    MADE = 3
    """The node was added to a set this claim made, so no node held the VM as it committed
    (every node that may hold a domain is in the set, and an empty set is removed), and
    any node that claims it later finds this one (its sole-holder read follows its own
    claim): the node is the sole holder with no read of the set (``claim_fresh``)."""


class Holders:
    """The holder sets of all VMs, over one Store (a kazoo-style recipe)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.client = store.client

    def claim(self, vm: str, node: str) -> Claim:
        """Add ``node`` to ``vm``'s holders, only while ``vm`` is placed on ``node``;
        REFUSED (nothing added) when it is not placed there. One round trip: a transaction that
        checks the node's index entry exists as it commits (at the leader, so no read, and
        no sync, is needed before it: the issue 16 work dropped the two it had), with the
        create of the set's znode sent ahead of it (requests are answered in order)."""
        entry = self.store.path(paths.node_index_entry(node, vm))
        mine = self.store.path(paths.holder(vm, node))
        for _ in range(_RETRIES):
            # The set's znode may not exist yet (a first claim); sent ahead of the
            # transaction, so it exists by the time the transaction runs.
            parent = self.client.create_async(self.store.path(paths.holders(vm)), b"")
            txn = self.client.transaction()
            txn.check(entry, version=-1)
            txn.create(mine, b"")
            committed = txn.commit_async()
            made_set = True
            try:
                parent.get()
            except NodeExistsError:
                made_set = False
            check, create = committed.get()
            if not isinstance(check, Exception) and not isinstance(create, Exception):
                log.info("event=holder_added vm=%s node=%s", vm, node)
                return Claim.ADDED
            if isinstance(check, NoNodeError):
                if made_set:
                    # The set this claim made for nothing goes again (left, it would stay
                    # for good: only a holder's release tidies it). A claim racing this
                    # finds no parent for its holder and goes round again.
                    with contextlib.suppress(NoNodeError, NotEmptyError):
                        self.client.delete(self.store.path(paths.holders(vm)))
                return Claim.REFUSED  # not placed on this node
            if isinstance(create, NodeExistsError):
                return Claim.HELD
            if isinstance(create, NoNodeError):
                continue  # the set was tidied away between the two: again
            raise next(r for r in (check, create) if isinstance(r, Exception))
        raise RuntimeError(f"claiming {vm!r} for {node!r} kept racing; gave up")

    def claim_fresh(self, vm: str, node: str) -> tuple[Claim, tuple[Placement, int] | None]:
        """``claim``, first as the VM's only holder: one transaction that checks the VM is
        placed on ``node``, makes the set and adds ``node`` (MADE: the sole holder, with
        no read of the set), with the read of ``node``'s index entry (its placement and
        znode version, None when not placed there) sent right behind it, so both share a
        round trip and the read sees the placement as of the claim or later. When the set
        exists already: ``claim`` (one round trip more), and no entry."""
        entry = self.store.path(paths.node_index_entry(node, vm))
        txn = self.client.transaction()
        txn.check(entry, version=-1)
        txn.create(self.store.path(paths.holders(vm)), b"")
        txn.create(self.store.path(paths.holder(vm, node)), b"")
        committed = txn.commit_async()
        placed = self.client.get_async(entry)
        results = committed.get()
        check, made = results[0], results[1]
        if isinstance(check, NoNodeError):
            return Claim.REFUSED, None  # not placed on this node: nothing was made
        if not isinstance(check, Exception) and not isinstance(made, Exception):
            log.info("event=holder_added vm=%s node=%s set=made", vm, node)
            try:
                data, stat = placed.get()
            except NoNodeError:
                return Claim.MADE, None
            return Claim.MADE, (Placement.model_validate(decode(data)), int(stat.version))
        if isinstance(made, NodeExistsError):
            return self.claim(vm, node), None
        raise next(
            r for r in results if isinstance(r, Exception) and not isinstance(r, RolledBackError)
        )

    def read(
        self, vm: str, *, watch: Callable[[WatchedEvent], None] | None = None
    ) -> frozenset[str]:
        """The holders as of now on the leader (after a sync, sent with the read), never a
        lagging view. ``watch`` is set on the set by the read (none when there is no set)."""
        return self._send_set_read(vm, watch)()

    def read_with_entry(
        self, vm: str, node: str, *, watch: Callable[[WatchedEvent], None] | None = None
    ) -> tuple[frozenset[str], tuple[Placement, int] | None]:
        """``read`` and, in the same round trip (one sync, both reads sent together),
        ``node``'s index entry for ``vm``: its placement and znode version, None when the
        VM is not placed there. What a node reads right before it starts a domain. ``watch``
        is set on the set by its read (none when there is no set)."""
        held = self._send_set_read(vm, watch)
        entry = self.client.get_async(self.store.path(paths.node_index_entry(node, vm)))
        holders = held()
        try:
            data, stat = entry.get()
        except NoNodeError:
            return holders, None
        return holders, (Placement.model_validate(decode(data)), int(stat.version))

    def _send_set_read(
        self, vm: str, watch: Callable[[WatchedEvent], None] | None
    ) -> Callable[[], frozenset[str]]:
        """A sync and a read of ``vm``'s set, sent now (answered in that order); what it
        returns waits for them: the holders, none when there is no set."""
        path = self.store.path(paths.holders(vm))
        pending = self.client.sync_async(path)
        children = self.client.get_children_async(path, watch=watch)

        def collect() -> frozenset[str]:
            pending.get()
            try:
                return frozenset(children.get())
            except NoNodeError:
                return frozenset()

        return collect

    def ensure(self, vm: str, node: str) -> None:
        """Make ``node`` a holder of ``vm`` whatever its placement, unchecked. No daemon
        calls it any more (a live migration's target holds the VM throughout, kept by its
        source's mark: ``set_migrating``); tests set holds up with it."""
        try:
            self.client.create(self.store.path(paths.holder(vm, node)), b"", makepath=True)
        except NodeExistsError:
            return
        log.info("event=holder_handed_over vm=%s node=%s", vm, node)

    def set_migrating(self, vm: str, node: str, target: str | None) -> bool:
        """Record that ``node``'s domain of ``vm`` may be on its way to ``target`` (a live
        migration is about to begin), or with None that it is not (the job ended, and its
        outcome was handed over). The record is two znodes made in one transaction:
        ``to-<target>`` under ``node``'s own holder entry (a restarted daemon finds where a
        job went, even one that ended while it was down) and ``from-<node>`` under
        ``target``'s, which keeps ``target`` from letting go (``release``) while the job may
        still bring the domain there: the target holds the VM from before the job begins
        until its source knows the outcome. False (nothing recorded) when either entry is
        gone: the target let go, or ``node`` no longer holds it; the job must not begin."""
        self._clear_records(vm, node)
        if target is None:
            return True
        mine = self.store.path(paths.holder(vm, node))
        theirs = self.store.path(paths.holder(vm, target))
        txn = self.client.transaction()
        txn.create(f"{mine}/{_TO}{target}")
        txn.create(f"{theirs}/{_FROM}{node}")
        results = txn.commit()
        if any(isinstance(result, Exception) for result in results):
            log.info(
                "event=migration_record_refused vm=%s node=%s target=%s why=%r",
                vm,
                node,
                target,
                next(r for r in results if isinstance(r, Exception)),
            )
            return False
        return True

    def migrating_to(self, vm: str, node: str) -> str | None:
        """Where ``set_migrating`` recorded ``node``'s domain of ``vm`` may be going; None
        when nowhere (or ``node`` holds no entry)."""
        targets, legacy = self._records(vm, node)
        if targets or not legacy:
            return targets[0] if targets else None
        # A record a pvcnoded older than the marks made: the target as the entry's data.
        try:
            data, _ = self.client.get(self.store.path(paths.holder(vm, node)))
        except NoNodeError:
            return None
        return data.decode() or None

    def _records(self, vm: str, node: str) -> tuple[list[str], bool]:
        """The targets ``node``'s records of ``vm`` name, and whether its entry holds an
        older pvcnoded's record (the target as the entry's data, without marks)."""
        mine = self.store.path(paths.holder(vm, node))
        try:
            kids, stat = self.client.get_children(mine, include_data=True)
        except NoNodeError:
            return [], False
        targets = sorted(kid[len(_TO) :] for kid in kids if kid.startswith(_TO))
        return targets, bool(stat.dataLength)

    def _clear_records(self, vm: str, node: str) -> None:
        """Remove ``node``'s records of ``vm`` and the targets' marks, each mark first (a
        record left by a crash between the two is cleared again; a mark left without its
        record would keep its target from ever letting go)."""
        mine = self.store.path(paths.holder(vm, node))
        targets, legacy = self._records(vm, node)
        for target in targets:
            with contextlib.suppress(NoNodeError):
                self.client.delete(f"{self.store.path(paths.holder(vm, target))}/{_FROM}{node}")
            with contextlib.suppress(NoNodeError):
                self.client.delete(f"{mine}/{_TO}{target}")
        if legacy:
            with contextlib.suppress(NoNodeError):
                self.client.set(mine, b"")

    def holds(self, vm: str, node: str) -> bool:
        return self.client.exists(self.store.path(paths.holder(vm, node))) is not None

    def release(
        self,
        vm: str,
        node: str,
        *,
        force: bool = False,
        on_unblock: Callable[[WatchedEvent], None] | None = None,
    ) -> Release:
        """``node`` no longer holds ``vm``: call only once its domain is gone. Its own
        records (``set_migrating``) go with it, marks on their targets first. BLOCKED
        (nothing removed) while another node's live migration may still bring the domain
        here (a ``from-`` mark on this entry), unless ``force`` (a fence: the power-off is
        confirmed, and an incoming copy died with the host); ``on_unblock`` is then called
        once the marks change."""
        mine = self.store.path(paths.holder(vm, node))
        for _ in range(_RETRIES):
            try:
                self.client.delete(mine)
            except NoNodeError:
                return Release.NOT_HELD
            except NotEmptyError:
                try:
                    kids = self.client.get_children(mine, watch=on_unblock)
                except NoNodeError:
                    return Release.NOT_HELD
                sources = sorted(kid[len(_FROM) :] for kid in kids if kid.startswith(_FROM))
                # Its own records first, whatever else: no job of this node runs (its
                # domain is gone or off here), and two nodes each marked by the other's
                # record would otherwise wait for each other for good.
                if any(kid.startswith(_TO) for kid in kids):
                    self._clear_records(vm, node)
                if sources and not force:
                    log.info(
                        "event=release_blocked vm=%s node=%s sources=%s why='their live "
                        "migration to here may still be under way'",
                        vm,
                        node,
                        ",".join(sources),
                    )
                    return Release.BLOCKED
                for source in sources:
                    with contextlib.suppress(NoNodeError):
                        self.client.delete(f"{mine}/{_FROM}{source}")
                continue
            log.info("event=holder_removed vm=%s node=%s", vm, node)
            # Tidy the empty set; a claim racing this re-creates it.
            with contextlib.suppress(NoNodeError, NotEmptyError):
                self.client.delete(self.store.path(paths.holders(vm)))
            return Release.RELEASED
        raise RuntimeError(f"releasing {vm!r} for {node!r} kept racing; gave up")

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
        released = [
            vm
            for vm in self.held_by(node)
            if self.release(vm, node, force=True) == Release.RELEASED
        ]
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
