"""Locks under /locks (kazoo's Lock, ReadLock and WriteLock recipes)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from kazoo.recipe.lock import Lock, ReadLock, WriteLock

from zkstore import paths
from zkstore.store import Store

log = logging.getLogger(__name__)

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


def release(lock: Lock, holder: str, session_lost: Callable[[], bool] = lambda: False) -> bool:
    """Release ``lock``, retrying with back-off: a lock node left behind holds up everyone
    queued after it for as long as our session lives. False when it gave up."""
    for attempt in range(1, 6):
        try:
            lock.release()
            return True
        except Exception as exc:
            log.warning(
                "event=lock_release_failed holder=%s path=%s attempt=%d error=%r",
                holder,
                lock.path,
                attempt,
                exc,
            )
            if session_lost():
                return True  # the session took the node with it
            time.sleep(min(0.1 * 2**attempt, 2.0))
    log.error("event=lock_release_gave_up holder=%s path=%s", holder, lock.path)
    return False
