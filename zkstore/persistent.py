"""Persistent recursive watches (ZooKeeper 3.6's ``addWatch``) on a kazoo client.

One watch on a root tells of every create, data change and delete at or below it, for as
long as the connection lasts, and is never re-armed. The caches (zkstore/subtree.py) use it
instead of a one-shot child watch on the root and a watch on every znode they read: a new
object then costs the reads of its znodes only, where a child watch made every client list
the whole root again (10,000 names for 10,000 VMs) on each creation (issue 16).

kazoo (2.11) has no API for it; its pull request (python-zk/kazoo#715) is not merged. This
recipe adds the one request it needs (opcode 106, ``AddWatchRequest``: a path and a mode)
through kazoo's own request path (``KazooClient._call``), and hears its events by wrapping
the client's connection handler's ``_read_watch_event``, which keeps dispatching kazoo's
one-shot watches as before. The server drops a connection's watches with the connection, so
the owner adds the watch again after every reconnect (and reads everything again, as it
must anyway: events may have been missed meanwhile).

A server older than 3.6 answers ``UnimplementedError``: ``add`` raises it, and the owner
falls back to one-shot watches (and says so in its log).
"""

from __future__ import annotations

import logging
import threading
from collections import namedtuple
from collections.abc import Callable
from typing import Any

from kazoo.client import KazooClient
from kazoo.protocol.serialization import Watch, int_struct, write_string
from kazoo.protocol.states import (
    EVENT_TYPE_MAP,
    Callback,
    WatchedEvent,
)

log = logging.getLogger(__name__)

PERSISTENT_RECURSIVE = 1
"""``AddWatchMode.PERSISTENT_RECURSIVE`` (0 is PERSISTENT: the znode itself only)."""

_CHILD_EVENT = 4
"""A NodeChildrenChanged notification: never sent for a recursive watch (only to a
one-shot child watch of the same connection, which kazoo's own dispatch serves)."""


Callback_ = Callable[[WatchedEvent], None]
Covered = Callable[[WatchedEvent], bool]
"""Whether an event needs no dispatch to a callback (``add_async``)."""


class _AddWatch(namedtuple("_AddWatch", "path mode")):
    type = 106

    def serialize(self) -> bytearray:
        buffer = bytearray()
        buffer.extend(write_string(self.path))
        buffer.extend(int_struct.pack(self.mode))
        return buffer

    @classmethod
    def deserialize(cls, _buffer: bytes, _offset: int) -> bool:
        return True  # the reply is its header alone


class PersistentWatches:
    """The persistent recursive watches of one kazoo client, one callback per root. A
    kazoo-style recipe: ``PersistentWatches.of(client)`` gives the one instance per client."""

    _instances_lock = threading.Lock()

    def __init__(self, client: KazooClient) -> None:
        self._client = client
        self._lock = threading.Lock()
        # chrooted root -> its callbacks, each with its ``covered`` (several caches of one
        # client may watch one root)
        self._roots: dict[str, list[tuple[Callback_, Covered | None]]] = {}
        connection: Any = client._connection
        original = connection._read_watch_event

        def read_watch_event(buffer: bytes, offset: int) -> Any:
            # kazoo's reader thread: deserialize again (cheap) to see the path, then let
            # kazoo dispatch its one-shot watches as it always did.
            try:
                watch, _ = Watch.deserialize(buffer, offset)
            except Exception:  # kazoo's own call below reports a bad event
                watch = None
            result = original(buffer, offset)
            if watch is not None:
                self._dispatch(watch)
            return result

        connection._read_watch_event = read_watch_event

    @classmethod
    def of(cls, client: KazooClient) -> PersistentWatches:
        # Kept on the client itself: nothing here outlives it (a stopped store is collected).
        with cls._instances_lock:
            found: PersistentWatches | None = getattr(client, "_pvc_persistent_watches", None)
            if found is None:
                found = cls(client)
                client._pvc_persistent_watches = found  # type: ignore[attr-defined]
            return found

    def add_async(self, root: str, callback: Callback_, *, covered: Covered | None = None) -> Any:
        """Send ``addWatch`` (recursive) on ``root``; events reach ``callback`` on kazoo's
        callback thread from the moment the server answered (requests sent after this one
        see it set). Returns kazoo's async result (``UnimplementedError``: the server is
        older than 3.6).

        ``covered(event)`` is asked first, on kazoo's reader thread, as the event is read
        (so it must be quick, and must not wait for ZooKeeper): True drops the event for
        this callback. The reader has by then read every answer the server sent before the
        event, so an answer still to come was made after the change the event reports
        (ZooKeeper sends a connection's answers and events in the order it made them, and
        an event after the change): a read of the same znode not answered yet already
        covers it."""
        path = self._client.chroot + root if self._client.chroot else root
        with self._lock:
            callbacks = self._roots.setdefault(path, [])
            if all(found != callback for found, _ in callbacks):
                callbacks.append((callback, covered))
        result = self._client.handler.async_result()
        self._client._call(_AddWatch(path, PERSISTENT_RECURSIVE), result)
        return result

    def remove(self, root: str, callback: Callable[[WatchedEvent], None]) -> None:
        """Stop calling ``callback`` for ``root`` (the server's watch goes with the
        connection; a ``removeWatches`` of its own is not worth a request)."""
        path = self._client.chroot + root if self._client.chroot else root
        with self._lock:
            callbacks = [c for c in self._roots.get(path, []) if c[0] != callback]
            if callbacks:
                self._roots[path] = callbacks
            else:
                self._roots.pop(path, None)

    def _dispatch(self, watch: Any) -> None:
        if watch.type == _CHILD_EVENT or watch.type not in EVENT_TYPE_MAP:
            return
        client = self._client
        if client._stopped.is_set():
            return
        path: str = watch.path
        with self._lock:
            registered = [
                pair
                for root, found in self._roots.items()
                if path == root or path.startswith(root + "/")
                for pair in found
            ]
        if not registered:
            return
        event = WatchedEvent(EVENT_TYPE_MAP[watch.type], client._state, client.unchroot(path))
        for callback, covered in registered:
            try:
                if covered is not None and covered(event):
                    continue
            except Exception:  # never on kazoo's reader thread: dispatch it after all
                log.exception("event=persistent_watch_covered_failed path=%s", path)
            client.handler.dispatch_callback(Callback("watch", callback, (event,)))
