"""List + watch one kind's spec and status znodes, pipelined (the API cache's source).

A thin user of zkstore.subtree: the kind's root followed two levels deep, of each object's
children only ``status`` (the API serves spec and status; placement is the scheduler's).
The raw bytes are cached and decoded on ``snapshot``. After every reconnect everything is
read again and what has gone is dropped and reported.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from zkstore import paths
from zkstore.codec import decode
from zkstore.store import Store
from zkstore.subtree import SubtreeWatch


class KindWatch:
    def __init__(self, store: Store, plural: str, on_key: Callable[[str], None]) -> None:
        self._client = store.client
        self._tree = SubtreeWatch(
            store.client, store.path(paths.kind_root(plural)), on_key, children=(paths.STATUS,)
        )

    def start(self, timeout: float) -> None:
        """Load every object; fails only when the load makes no progress for ``timeout`` s."""
        self._client.ensure_path(self._tree.root)
        self._tree.start(timeout)

    def close(self) -> None:
        self._tree.close()

    def names(self) -> list[str]:
        return self._tree.keys()

    def status(self, name: str) -> tuple[int, Any, int] | None:
        """(spec mzxid, status document, status mzxid), decoding only the status; None when
        the object or its status is missing."""
        spec, status = self._tree.pair(name, paths.STATUS)
        if spec is None or status is None:
            return None
        return spec[1], decode(status[0]), status[1]

    def snapshot(self, name: str) -> tuple[Any, int, Any, int] | None:
        """(spec document, its mzxid, status document or None, its mzxid or 0)."""
        spec, status = self._tree.pair(name, paths.STATUS)
        if spec is None:
            return None
        if status is None:
            return decode(spec[0]), spec[1], None, 0
        return decode(spec[0]), spec[1], decode(status[0]), status[1]
