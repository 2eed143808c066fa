"""What each node holds (memory, vCPUs, VMs), summed from the VMs placed there and kept up to
date one VM at a time: the scheduler's view for fit and policy, O(nodes) per placement.

A VM event marks its name (``touch``, on kazoo's thread: cheap); ``refresh``, before each
decision, reads again only the names marked since, so the cost follows the changes, not the
number of VMs. The first refresh reads every VM.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Share:
    """One VM's claim on its node."""

    node: str
    memory: int
    vcpus: int
    halted: bool


@dataclass
class NodeLoad:
    name: str
    memory_total: int
    memory_allocated: int = 0
    memory_provisioned: int = 0
    vcpus_allocated: int = 0
    vms: int = 0
    load: float = 0.0

    @property
    def memory_free(self) -> int:
        return self.memory_total - self.memory_allocated


@dataclass
class _Sums:
    allocated: int = 0
    provisioned: int = 0
    vcpus: int = 0
    vms: int = 0

    def add(self, name: str, share: Share, sign: int) -> None:
        self.provisioned += sign * share.memory
        if not share.halted:
            self.allocated += sign * share.memory
            self.vcpus += sign * share.vcpus
            self.vms += sign


class Ledger:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._dirty: set[str] = set()
        self._all_dirty = True
        self._shares: dict[str, Share] = {}
        self._sums: dict[str, _Sums] = {}

    def touch(self, name: str) -> None:
        """``name`` changed (its spec, status or placement): read it again at the next
        refresh."""
        with self._lock:
            self._dirty.add(name)

    def reset(self) -> None:
        """Read every VM again at the next refresh (after a relist)."""
        with self._lock:
            self._all_dirty = True

    def refresh(
        self, share_of: Callable[[str], Share | None], every_name: Callable[[], Iterable[str]]
    ) -> int:
        """Bring the sums up to date; returns how many VMs were read."""
        with self._lock:
            if self._all_dirty:
                names = set(every_name()) | set(self._shares) | self._dirty
                self._all_dirty = False
            else:
                names = self._dirty
            self._dirty = set()
            for name in names:
                self._apply(name, share_of(name))
        return len(names)

    def _apply(self, name: str, share: Share | None) -> None:
        old = self._shares.pop(name, None)
        if old is not None:
            self._sums[old.node].add(name, old, -1)
        if share is not None:
            self._shares[name] = share
            self._sums.setdefault(share.node, _Sums()).add(name, share, +1)

    def loads(self, nodes: dict[str, tuple[int, float]]) -> dict[str, NodeLoad]:
        """``load`` of each node, given as name -> (memory_total, load), under one lock."""
        none = _Sums()
        with self._lock:
            sums = {name: self._sums.get(name) or none for name in nodes}
            return {
                name: NodeLoad(
                    name=name,
                    memory_total=total,
                    memory_allocated=s.allocated,
                    memory_provisioned=s.provisioned,
                    vcpus_allocated=s.vcpus,
                    vms=s.vms,
                    load=load,
                )
                for (name, (total, load)), s in zip(nodes.items(), sums.values(), strict=True)
            }
