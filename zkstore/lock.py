"""Locks under /locks (kazoo's Lock, ReadLock and WriteLock recipes)."""

from __future__ import annotations

from kazoo.recipe.lock import Lock, ReadLock, WriteLock

from zkstore import paths
from zkstore.store import Store

HANDOVER = "primary-handover"
"""Primary handovers take it for writing; work that must not straddle a handover
(a drain step) takes it for reading, so it waits while a takeover is under way
and a handover waits for the step in flight."""


def exclusive_lock(store: Store, name: str, identifier: str = "") -> Lock:
    """A kazoo Lock at /locks/<name>; use as a context manager or acquire(timeout=...)."""
    return store.client.Lock(store.path(paths.lock(name)), identifier)


def handover_write_lock(store: Store, identifier: str) -> WriteLock:
    return store.client.WriteLock(store.path(paths.lock(HANDOVER)), identifier)


def handover_read_lock(store: Store, identifier: str) -> ReadLock:
    return store.client.ReadLock(store.path(paths.lock(HANDOVER)), identifier)
