"""One node's part in the one-copy rule (zkstore/holders.py, docs/ha.md) for its VMs: its
claims, the sole-holder look before a start or an adoption, and its releases (refused
while another node's live migration may still bring the domain here).

It remembers which VMs this daemon claimed (only this node removes itself from a set, so
the memory stays true until it does, or until a fence's release shows it stale) and which
it found held already at its first claim: held before this daemon started, so a live
migration it began then may have ended while it was down (``Departures.settle_unseen``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from controllers.departure import Departures
from controllers.vm_power import LocalState
from controllers.vm_status import StatusWriter
from schemas import Placement, VirtualMachine, VirtualMachineStatus
from zkstore import Claim, Holders, Release

log = logging.getLogger(__name__)


class Claims:
    """The holder-set side of one node's VM controller."""

    def __init__(
        self,
        holders: Holders,
        node: str,
        departures: Departures,
        statuses: StatusWriter,
        wake: Callable[[str], None],
    ) -> None:
        self.holders = holders
        self.node = node
        self.departures = departures
        self.statuses = statuses
        self._wake = wake
        self._lock = threading.Lock()
        self._claimed: set[str] = set()
        self._unseen: set[str] = set()
        self._blocked: dict[str, int] = {}  # releases refused in a row (the back-off)
        self._unblock_watch: set[str] = set()  # a watch for a mark's removal is set
        # name -> the index entry read right behind a claim that made the set (this pass).
        self._made: dict[str, tuple[Placement, int] | None] = {}

    def claim(self, name: str) -> bool:
        """Be among ``name``'s holders before defining or starting anything; False when the
        placement no longer names this node. A claim that made the set (``Claim.MADE``)
        leaves the sole-holder look of this pass done (``unless_sole_holder``)."""
        with self._lock:
            if name in self._claimed:
                return True
        claim, entry = self.holders.claim_fresh(name, self.node)
        if not claim:
            return False
        with self._lock:
            self._claimed.add(name)
            if claim == Claim.HELD:
                self._unseen.add(name)  # held before this daemon started
            elif claim == Claim.MADE:
                self._made[name] = entry
        return True

    def pass_over(self, name: str) -> None:
        """The reconcile pass of ``name`` ended: a ``Claim.MADE`` of it served that pass
        alone (what it found is of that moment)."""
        with self._lock:
            self._made.pop(name, None)

    def claimed(self, name: str) -> bool:
        with self._lock:
            return name in self._claimed

    def held_before(self, name: str) -> bool:
        """Held when this daemon first claimed it, and not yet looked at for a migration
        that ended unseen (``looked`` ends that)."""
        with self._lock:
            return name in self._unseen

    def looked(self, name: str) -> None:
        with self._lock:
            self._unseen.discard(name)

    def release(self, name: str) -> float | None:
        """The domain is gone from this host (checked by the caller): let others start it.
        Returns None once this node holds it no more, else the delay before trying again:
        another node's live migration may still bring the domain here (its mark on this
        node's entry, zkstore/holders.py), until that source knows how its job ended. The
        mark's removal wakes it; the delay backs off to 10 s."""
        with self._lock:
            # One watch per VM at a time (each refusal would add one more otherwise).
            watch = name not in self._unblock_watch

        def unblocked(_event: object) -> None:
            with self._lock:
                self._unblock_watch.discard(name)
            self._wake(name)

        outcome = self.holders.release(name, self.node, on_unblock=unblocked if watch else None)
        with self._lock:
            if outcome == Release.BLOCKED:
                self._unblock_watch.add(name)
                blocked = self._blocked[name] = self._blocked.get(name, 0) + 1
                return min(0.5 * 2.0 ** min(blocked - 1, 5), 10.0)
            self._blocked.pop(name, None)
            self._unblock_watch.discard(name)
            self._claimed.discard(name)
        return None

    def forget(self, name: str) -> None:
        with self._lock:
            self._claimed.discard(name)
            self._unseen.discard(name)
            self._blocked.pop(name, None)
            self._unblock_watch.discard(name)

    def unless_sole_holder(
        self,
        vm: VirtualMachine,
        placement: Placement,
        local: LocalState,
        status: VirtualMachineStatus,
        reason: str,
    ) -> tuple[float | None, int | None]:
        """(None, the index entry's version) when this node is the VM's sole holder and the
        VM is placed here with this placement's epoch (both read after one sync, in one
        round trip; or known from this pass's claim, when it made the set), else (the
        requeue delay, None): other nodes may still hold its domain (a change of the set
        wakes it). The version is None when the placement moved."""
        name = vm.name
        with self._lock:
            made = name in self._made
            entry = self._made.pop(name, None)
        if made:
            # This pass's claim made the set: no other node held the VM as it committed,
            # and one that claims since finds this node and waits (Claim.MADE). Its index
            # entry was read behind the claim: no read of the set (three requests and a
            # round trip fewer per first start, issue 16), and no holder watch: no other
            # holder's release can concern this node.
            local.holder_waits = 0
            return None, _entry_version(entry, placement)
        # The holder watch rides on the read itself: a release after it wakes this VM, one
        # before it shows in it (a request per start fewer than a watch of its own, issue 16).
        holders, current = self.departures.read_watched(
            name,
            lambda watch: self.holders.read_with_entry(name, self.node, watch=watch),
            lambda found: found[0],
        )
        entry_version = _entry_version(current, placement)
        if self.node not in holders:
            # Removed by the primary after a fence of this node: this daemon's memory is stale.
            log.warning("event=holder_missing vm=%s node=%s", name, self.node)
            with self._lock:
                self._claimed.discard(name)
            return 0.1, None
        others = sorted(holders - {self.node})
        if not others:
            local.holder_waits = 0
            return None, entry_version
        if entry_version is None:
            return 0.1, None  # placed elsewhere since: no stale status over the others' word
        self.statuses.write_waiting(  # unless a live migration's source reports it
            vm,
            placement,
            reason,
            f"waiting for {', '.join(others)} to let go of it (the domain may still exist there)",
        )
        local.holder_waits += 1
        return min(0.1 * 2.0 ** min(local.holder_waits, 4), 1.0), None


def _entry_version(entry: tuple[Placement, int] | None, placement: Placement) -> int | None:
    """The index entry's znode version when it holds ``placement``'s epoch (the fencing
    token of a start), else None: the placement moved."""
    return entry[1] if entry is not None and entry[0].epoch == placement.epoch else None
