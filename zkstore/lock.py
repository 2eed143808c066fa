"""Exclusive locks under /locks (kazoo's Lock recipe)."""

from __future__ import annotations

from kazoo.recipe.lock import Lock

from zkstore import paths
from zkstore.store import Store


def exclusive_lock(store: Store, name: str, identifier: str = "") -> Lock:
    """A kazoo Lock at /locks/<name>; use as a context manager or acquire(timeout=...)."""
    return store.client.Lock(store.path(paths.lock(name)), identifier)
