"""Ephemeral leases: a znode that exists exactly while its holder's session lives."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import Any

from kazoo.exceptions import NodeExistsError, NoNodeError
from kazoo.protocol.states import KazooState

from zkstore.codec import decode, encode
from zkstore.store import Store

log = logging.getLogger(__name__)


class LeaseHeld(Exception):
    """Another live session holds the lease."""


class Lease:
    """Holds an ephemeral znode, and takes it again after a session loss.

    A process restarted after SIGKILL finds its old lease still there until the
    old session expires; ``acquire`` waits for that (up to ``wait``) rather than
    deleting it, because a second live holder with the same name is a
    misconfiguration we must not paper over.
    """

    def __init__(self, store: Store, relative_path: str, data: dict[str, Any]) -> None:
        self._store = store
        self._path = store.path(relative_path)
        self._data = data
        self._held = threading.Event()
        self._lost = False
        self._released = threading.Event()
        store.add_state_listener(self._on_state)

    @property
    def held(self) -> bool:
        return self._held.is_set()

    def holder(self) -> Any:
        try:
            return decode(self._store.client.get(self._path)[0])
        except NoNodeError:
            return None

    def acquire(self, wait: float) -> None:
        client = self._store.client
        deadline = time.monotonic() + wait
        delay = 0.1
        while True:
            try:
                client.create(self._path, encode(self._data), ephemeral=True, makepath=True)
                self._held.set()
                log.info("event=lease_acquired path=%s", self._path)
                return
            except NodeExistsError:
                stat = client.exists(self._path)
                if stat is not None and stat.ephemeralOwner == client.client_id[0]:
                    self._held.set()
                    return
            if time.monotonic() >= deadline:
                raise LeaseHeld(f"lease {self._path} is held by {self.holder()}")
            log.info("event=lease_wait path=%s holder=%s", self._path, self.holder())
            time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 2, 1.0)

    def release(self) -> None:
        """Delete the lease only if this session owns it: never another holder's."""
        self._released.set()
        was_held = self._held.is_set()
        self._held.clear()
        if not was_held:
            return
        client = self._store.client
        stat = client.exists(self._path)
        if stat is None or stat.ephemeralOwner != client.client_id[0]:
            return
        with contextlib.suppress(NoNodeError):
            client.delete(self._path, version=stat.version)

    def _on_state(self, state: KazooState) -> None:
        # Runs on kazoo's event thread: never block here, re-acquire from a thread.
        if state == KazooState.LOST:
            self._held.clear()
            self._lost = True
            log.warning("event=lease_lost path=%s", self._path)
        elif state == KazooState.CONNECTED and self._lost:
            self._lost = False
            threading.Thread(target=self._reacquire, name="lease-reacquire", daemon=True).start()

    def _reacquire(self) -> None:
        """Take the lease again after a session loss, retrying until held: a node that runs
        without its lease is one the primary may think dead."""
        delay = 1.0
        while not self._released.is_set() and not self._held.is_set():
            try:
                self.acquire(wait=self._store.client._session_timeout / 1000.0 + 5.0)
                return
            except Exception as exc:  # logged; the heartbeat goes on and says not ready
                log.error(
                    "event=lease_reacquire_failed path=%s error=%s retry_in=%.0fs",
                    self._path,
                    exc,
                    delay,
                )
            if self._released.wait(delay):
                return
            delay = min(delay * 2, 30.0)
