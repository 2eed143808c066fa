"""Each fence as a record in ZooKeeper (``/fencing/<node>``), so a new primary carries on a
fence the last one began: fencing -> fenced -> recovered -> poweredOn.

- fencing: the node was found dead and its saving throws ran out; a power-off is being
  asked for and confirmed (retried with back-off until confirmed).
- fenced: its power-off was confirmed. Its holders are released and its VMs recovered.
- recovered: its VMs were placed elsewhere; it is being powered on again.
- poweredOn: done; the record goes once the node runs again.
"""

from __future__ import annotations

import contextlib
import enum
from dataclasses import dataclass

from kazoo.exceptions import BadVersionError, NodeExistsError, NoNodeError

from schemas import utcnow
from zkstore import Store, paths
from zkstore.codec import decode, encode


class FenceStep(enum.Enum):
    FENCING = "fencing"
    FENCED = "fenced"
    RECOVERED = "recovered"
    POWERED_ON = "poweredOn"


@dataclass(frozen=True)
class FenceRecord:
    step: FenceStep
    epoch: int | None = None
    at: str | None = None


class FenceRecords:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.client = store.client

    def _path(self, node: str) -> str:
        return self.store.path(paths.fence_record(node))

    def all(self) -> dict[str, FenceRecord]:
        root = self.store.path(paths.FENCING)
        try:
            names = self.client.get_children(root)
        except NoNodeError:
            return {}
        reads = [(name, self.client.get_async(f"{root}/{name}")) for name in names]
        records: dict[str, FenceRecord] = {}
        for name, read in reads:
            with contextlib.suppress(NoNodeError, ValueError, KeyError):
                raw = decode(read.get()[0])
                records[name] = FenceRecord(FenceStep(raw["step"]), raw.get("epoch"), raw.get("at"))
        return records

    def begin(self, node: str, epoch: int) -> None:
        data = encode({"step": FenceStep.FENCING.value, "epoch": epoch, "at": utcnow()})
        with contextlib.suppress(NodeExistsError):
            self.client.create(self._path(node), data, makepath=True)

    def advance(self, node: str, step: FenceStep, epoch: int, *, after: FenceStep) -> bool:
        """Move the record from ``after`` to ``step`` (compare-and-set). False, writing
        nothing, when the record is gone or at another step: someone else moved it on,
        and a removed record is never brought back."""
        path = self._path(node)
        try:
            data, stat = self.client.get(path)
            current = FenceStep(decode(data)["step"])
        except (NoNodeError, ValueError, KeyError):
            return False
        if current != after:
            return False
        try:
            self.client.set(
                path,
                encode({"step": step.value, "epoch": epoch, "at": utcnow()}),
                version=stat.version,
            )
        except (NoNodeError, BadVersionError):
            return False
        return True

    def remove(self, node: str) -> None:
        with contextlib.suppress(NoNodeError):
            self.client.delete(self._path(node))
