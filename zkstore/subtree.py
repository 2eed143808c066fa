"""A pipelined list + watch of a ZooKeeper subtree two levels deep: the engine of the caches.

Below ``root`` every child is a *key*, and a key's children (``<key>/<child>``) are its
*children*. Nothing deeper is read, and nothing deeper is needed: every root PVC follows has
that shape (a kind's objects with their ``status`` and ``placement``; the keys of
``paths.LEASES_NODES`` and of a node's index, with no children). Per znode only its raw bytes
and its mzxid are kept, per key the names of its children (one shared set per distinct set of
names). A VM of 1.1 KB of data costs ~2.8 KB held (tracemalloc; ~3 KB of RSS) where kazoo's
TreeCache (a TreeNode per znode with its ZnodeStat, a children dict and two watches) held
~5.8 KB and added ~15 KB of RSS (bench/informer_memory.py). A third of what is left is
kazoo's own record of each watch (a path and a set per watched znode).

Which children are followed: by default every child, found by listing each key (with a
child watch). Given ``children`` (names), only those, and no list: each is read directly,
and when one is missing, a listing of its key (with a child watch) tells of its creation.
That saves a request per key whose children all exist (a VM: spec, status, placement,
three reads instead of four; a lease or an index entry, which has no children: one instead
of two), and the Python client's cost per request is what bounds the load.

Reads are sent with up to ``window`` in flight at once (TreeCache reads one znode after
another through its own queue), and every read sets the watch that tells of the next change.
Watch events are only hints to read again: the cache changes on read results alone. Each
read gets a sequence number under the lock that also sends it, so numbers follow the order
ZooKeeper answers in; a result older than one already applied to the same path is dropped,
however the threads that deliver results are scheduled.

How it is told of changes: by one persistent recursive watch on ``root``
(zkstore/persistent.py; ZooKeeper 3.6+), which reports each create, change and delete below
it with its path, so a new key or child is read directly and nothing is listed after the
load; reads then set no watch. On a server without ``addWatch`` it falls back to one-shot
watches (and logs it): a child watch on the root and on each listed key, and a watch set by
every read.

After every reconnect the watches may be gone (kazoo does not send them again after a
session loss, and a server that lost its quorum drops its own): everything is read again,
and what has gone reads as NoNode or is missing from its key's list, and is dropped and
reported.

``on_change(key)`` is called for every change at or below ``<root>/<key>`` (the key created,
changed or deleted; a followed child appearing, changing or going), the initial load
included, on kazoo's completion thread: it must only enqueue.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Collection
from typing import Any

from kazoo.client import KazooClient
from kazoo.exceptions import (
    ConnectionClosedError,
    ConnectionLoss,
    NoNodeError,
    SessionExpiredError,
    UnimplementedError,
)
from kazoo.protocol.states import EventType, KazooState, WatchedEvent

from zkstore.persistent import PersistentWatches

log = logging.getLogger(__name__)

Node = tuple[bytes, int]
"""A znode as cached: its raw data and its mzxid."""

# Requests in flight at once during a (re)load: bounded so memory stays flat. 500 loads
# 10,000 VMs as fast as 3,000 did (the client's cost per request bounds it) and its requests
# in flight take ~5 MB less at the peak.
WINDOW = 500
_NONE: frozenset[str] = frozenset()
_FAILED = object()
# What a dropped connection fails a read with: the reload after reconnecting reads it again.
_DISCONNECTED = (ConnectionLoss, SessionExpiredError, ConnectionClosedError)


class SubtreeWatch:
    def __init__(
        self,
        client: KazooClient,
        root: str,
        on_change: Callable[[str], None],
        children: Collection[str] | None = None,
        window: int = WINDOW,
        *,
        persistent: bool = True,
    ) -> None:
        self.root = root
        self._client = client
        self._on_change = on_change
        self._follow = frozenset(children) if children is not None else None
        self._window = window
        self._lock = threading.Condition(threading.RLock())
        self._nodes: dict[str, Node] = {}  # "key" and "key/child"
        self._kids: dict[str, frozenset[str]] = {}  # every key followed: its children seen
        self._sets: dict[frozenset[str], frozenset[str]] = {}  # one instance per set
        self._seq = 0
        # Per read slot ("key", "key/child", "key/" for a key's list) while reads of it are
        # in flight: how many, and the newest result applied. Kept only while in flight, so
        # nothing grows with churn.
        self._inflight: dict[str, int] = {}
        self._applied: dict[str, int] = {}
        # Per znode slot ("key", "key/child"): its newest read while it is unanswered
        # (``_covered``).
        self._unanswered: dict[str, Any] = {}
        # Keys to read, sent as the window allows, each with whether it is new (created
        # since the load): a new key's followed children are found by listing it.
        self._backlog: deque[tuple[str, bool]] = deque()
        self._pending = 0
        self._closed = False
        self._incomplete = False  # a read lost to a dropped connection, until the reload
        self._watcher = self._watch  # one bound method for every watch kazoo keeps
        self._persistent = persistent
        """One persistent recursive watch on the root instead of one-shot watches (decided
        at ``start``: False when the server cannot)."""
        self.progress = 0
        """Read results received so far: the load's progress."""
        self.requests = 0
        """Reads sent to ZooKeeper so far."""

    # -- lifecycle ---------------------------------------------------------------

    def start(self, stall: float) -> None:
        """Read the whole subtree (``root`` must exist) and return once it is in the cache;
        fails only when the load makes no progress for ``stall`` seconds."""
        self._client.add_listener(self._on_state)
        if self._persistent:
            try:
                self._add_persistent_watch().get(timeout=stall)
            except UnimplementedError:
                PersistentWatches.of(self._client).remove(self.root, self._on_event)
                self._persistent = False
                log.warning(
                    "event=persistent_watch_unsupported root=%s action=one_shot_watches "
                    "why='ZooKeeper older than 3.6: every new object costs a listing'",
                    self.root,
                )
        names = self._client.get_children(self.root, watch=self._watch_if_one_shot)
        with self._lock:
            self.requests += 1
            self._enqueue(sorted(names), everything=True)
        self.wait_loaded(stall)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._backlog.clear()
        self._client.remove_listener(self._on_state)
        if self._persistent:
            PersistentWatches.of(self._client).remove(self.root, self._on_event)

    def _add_persistent_watch(self) -> Any:
        """Send the root's persistent recursive watch (``PersistentWatches.add_async``)."""
        return PersistentWatches.of(self._client).add_async(
            self.root, self._on_event, covered=self._covered
        )

    @property
    def _watch_if_one_shot(self) -> Callable[[WatchedEvent], None] | None:
        """The watch a read sets: none under a persistent watch, which reports it all."""
        return None if self._persistent else self._watcher

    def wait_loaded(self, stall: float) -> None:
        """Wait while the load makes progress: 10,000 VMs take a while on a busy host, and a
        primary that gave up at a fixed deadline would start over and never finish (issue
        16). Fails only when nothing arrives for ``stall`` seconds."""
        started = time.monotonic()
        seen, since = -1, started
        with self._lock:
            while not self._lock.wait_for(self._settled, min(stall, 5.0)):
                now = time.monotonic()
                if self.progress != seen:
                    seen, since = self.progress, now
                    log.info(
                        "event=informer_loading root=%s znodes=%d after=%.1fs",
                        self.root,
                        seen,
                        now - started,
                    )
                elif now - since >= stall:
                    raise TimeoutError(
                        f"informer on {self.root} made no progress for {stall:g}s "
                        f"({seen} znodes read)"
                    )

    def _notify_settled(self) -> None:
        # Only a settled cache is waited for: waking the waiter on every one of 40,000
        # results would cost a thread switch each.
        if self._settled():
            self._lock.notify_all()

    def _settled(self) -> bool:
        return self._closed or (not self._backlog and self._pending == 0 and not self._incomplete)

    def _on_state(self, state: KazooState) -> None:
        # kazoo's connection thread: no blocking calls here. A CONNECTED always follows a
        # SUSPENDED or a LOST (the listener is added once connected), and after either the
        # watches may be gone: read (and watch) everything again.
        if state == KazooState.CONNECTED and not self._closed:
            self._client.handler.spawn(self._list_root, True)

    # -- the cache -------------------------------------------------------------------

    def keys(self) -> list[str]:
        """The keys whose own znode is loaded, sorted."""
        with self._lock:
            return sorted(key for key in self._kids if key in self._nodes)

    def node(self, key: str, child: str | None = None) -> Node | None:
        return self._nodes.get(f"{key}/{child}" if child else key)

    def pair(self, key: str, child: str) -> tuple[Node | None, Node | None]:
        """A key's node and one child's, read together."""
        with self._lock:
            return self._nodes.get(key), self._nodes.get(f"{key}/{child}")

    # -- reads (all under the lock) --------------------------------------------------------

    def _enqueue(self, names: Collection[str], everything: bool) -> None:
        """Queue keys to read: ``everything`` also the keys known, to drop what is gone."""
        known = self._kids
        fresh = [name for name in names if name not in known]
        for name in fresh:
            known[name] = _NONE
        if everything:
            self._backlog.extend((name, False) for name in sorted(known))
        else:
            self._backlog.extend((name, True) for name in fresh)
        self._pump()

    def _pump(self) -> None:
        while self._backlog and self._pending < self._window and not self._closed:
            key, new = self._backlog.popleft()
            if key not in self._kids:
                continue  # deleted while it waited
            self._read(key)
            if new and self._persistent:
                # Its children, created after it, are each reported by the root's watch.
                listing, children = False, _NONE
            elif self._follow is None:
                # Every child, found by listing the key; those known are read now.
                listing, children = True, self._kids[key]
            elif new:
                # A key created since the load has its children still to come (a new VM:
                # no status, no placement yet): one listing, with the child watch that tells
                # of them, instead of a read of each that finds nothing (issue 16); none
                # when it can have no children.
                listing, children = bool(self._follow), _NONE
            else:
                listing, children = False, self._kids[key] | self._follow
            if listing:
                self._read(key, listing=True)
            for child in children:
                self._read(f"{key}/{child}")

    def _read(self, rel: str, listing: bool = False) -> None:
        slot = rel + "/" if listing else rel
        path = f"{self.root}/{rel}"
        with self._lock:
            if self._closed:
                return
            self._seq += 1
            seq = self._seq
            self._pending += 1
            self.requests += 1
            self._inflight[slot] = self._inflight.get(slot, 0) + 1
            watch = self._watch_if_one_shot
            if listing:
                result = self._client.get_children_async(path, watch=watch)
            else:
                result = self._client.get_async(path, watch=watch)
                self._unanswered[slot] = result
        result.rawlink(lambda done: self._complete(slot, seq, done))

    def _list_root(self, everything: bool) -> None:
        with self._lock:
            if self._closed:
                return
            self._pending += 1
            self.requests += 1
            if self._persistent:
                # The server dropped the watch with the connection: set again, ahead of the
                # listing (answered in order, so nothing after the listing goes unreported).
                # A failure shows in the listing too (the connection went): the next
                # reconnect does both again.
                self.requests += 1
                self._add_persistent_watch()
        result = self._client.get_children_async(self.root, watch=self._watch_if_one_shot)
        result.rawlink(lambda done: self._on_root(everything, done))

    def _on_root(self, everything: bool, done: Any) -> None:
        try:
            names = done.get()
        except Exception as exc:
            # A dropped connection: the reload after reconnecting lists it again.
            log.warning("event=subtree_list_failed root=%s error=%r", self.root, exc)
            names = None
            self._lost(exc)
        with self._lock:
            self._pending -= 1
            self.progress += 1
            if names is not None and not self._closed:
                if everything:
                    self._incomplete = False  # every key is read again from here
                self._enqueue(names, everything)
            self._pump()
            self._notify_settled()

    # -- results -----------------------------------------------------------------------------

    def _lost(self, exc: Exception) -> None:
        """A read the connection lost leaves the cache incomplete (a load is not done) until
        the reload that follows the reconnect; another error (no access) is only logged."""
        if isinstance(exc, _DISCONNECTED):
            with self._lock:
                self._incomplete = True

    def _complete(self, slot: str, seq: int, done: Any) -> None:
        changed: str | None = None
        try:
            try:
                value = done.get()
            except NoNodeError:
                value = None
            except Exception as exc:
                # A dropped connection: the reload after reconnecting reads it again.
                log.warning("event=subtree_read_failed path=%s/%s error=%r", self.root, slot, exc)
                value = _FAILED
                self._lost(exc)
            with self._lock:
                if value is not _FAILED and seq > self._applied.get(slot, 0) and not self._closed:
                    self._applied[slot] = seq
                    changed = self._apply(slot, value)
        finally:
            with self._lock:
                if self._unanswered.get(slot) is done:
                    del self._unanswered[slot]
                self._pending -= 1
                self.progress += 1
                left = self._inflight[slot] - 1
                if left:
                    self._inflight[slot] = left
                else:  # no older answer can come: forget the slot
                    del self._inflight[slot]
                    self._applied.pop(slot, None)
                self._pump()
                self._notify_settled()
        if changed is not None:
            try:
                self._on_change(changed)
            except Exception:  # a listener bug must not kill kazoo's thread
                log.exception("event=subtree_listener_failed root=%s key=%s", self.root, changed)

    def _apply(self, slot: str, value: Any) -> str | None:
        """Apply one read result; the key to report, if anything changed."""
        key, _, child = slot.partition("/")
        if key not in self._kids:
            if self._persistent and slot == key and value is not None:
                # Dropped by an older read that found it gone, and created again since
                # (its creation was reported while it was still known, so nothing else
                # reads it): read it again with its children.
                self._kids[key] = _NONE
                self._backlog.append((key, False))
            return None  # else a late answer about a key deleted since
        if slot.endswith("/"):
            return self._apply_list(key, value)
        if child:
            return self._apply_child(key, child, value)
        if value is None:
            return self._drop(key)
        data, stat = value
        old = self._nodes.get(key)
        self._nodes[key] = (data, int(stat.mzxid))
        return key if old is None or old[1] != stat.mzxid else None

    def _apply_list(self, key: str, value: Any) -> str | None:
        if value is None:
            return None  # the key is gone: its own read says so
        names = frozenset(value)
        if self._follow is not None:
            names &= self._follow  # the others are not read, nor watched
        old = self._kids[key]
        self._kids[key] = self._sets.setdefault(names, names)
        gone = [self._nodes.pop(f"{key}/{c}", None) for c in old - names]
        for child in names:
            rel = f"{key}/{child}"
            if rel not in self._nodes and rel not in self._inflight:
                self._read(rel)  # a new child: read it, and watch it
        return key if any(node is not None for node in gone) else None

    def _apply_child(self, key: str, child: str, value: Any) -> str | None:
        rel = f"{key}/{child}"
        kids = self._kids[key]
        if value is None:
            if child in kids:
                names = kids - {child}
                self._kids[key] = self._sets.setdefault(names, names)
            if self._follow is not None and not self._persistent:
                self._await_creation(rel)
            return key if self._nodes.pop(rel, None) is not None else None
        if child not in kids:
            names = kids | {child}
            self._kids[key] = self._sets.setdefault(names, names)
        data, stat = value
        old = self._nodes.get(rel)
        self._nodes[rel] = (data, int(stat.mzxid))
        return key if old is None or old[1] != stat.mzxid else None

    def _await_creation(self, rel: str) -> None:
        """A followed child that does not exist: a child watch on its key tells when it is
        created (the listing that answers it reads the child). Not an exists watch on the
        child: the children of a deleted object read NoNode before the object does, and an
        exists watch on a path that never comes back stays on the client and the server for
        the session's life (two per deleted VM). A child watch goes with its key."""
        key = rel.partition("/")[0]
        if key + "/" not in self._inflight:
            self._read(key, listing=True)

    def _drop(self, key: str) -> str | None:
        kids = self._kids.pop(key, _NONE) | (self._follow or _NONE)
        for child in kids:
            self._nodes.pop(f"{key}/{child}", None)
        return key if self._nodes.pop(key, None) is not None else None

    def _below_root(self, path: str) -> tuple[str, str, str] | None:
        """(``key`` or ``key/child``, key, child) of a path one or two levels below the
        root; None for the root itself, anything elsewhere, or anything deeper."""
        if not path.startswith(self.root + "/"):
            return None
        rel = path[len(self.root) + 1 :]
        key, _, child = rel.partition("/")
        return None if "/" in child else (rel, key, child)

    def _covered(self, event: WatchedEvent) -> bool:
        """A data change of a znode whose read is still unanswered: that answer comes after
        the event, so it already holds the change (``PersistentWatches.add_async``), and no
        read more is sent. Two writes of a status in a row (a VM's Starting, then Running)
        cost each cache one read where the second came before the first's answer (issue
        16). The order rests on the server: standalone ZooKeeper runs a session's reads and
        every write on one thread; a quorum member's CommitProcessor runs no read in
        parallel with a write (waitForEmptyPool), so a reply queued after a notification
        was made after that write. ZooKeeper documents the converse only (the event before
        the new data): look at CommitProcessor again on a ZooKeeper upgrade (3.8 here).
        On kazoo's reader thread, so without the lock: waiting for a thread that holds
        it (a pump sending hundreds of reads) would hold up every answer and ping of the
        session. A read registered after this look is simply not counted (a read more), and
        one answered meanwhile reads as ready: either way the event is passed on."""
        if event.type != EventType.CHANGED:
            return False
        below = self._below_root(event.path)
        if below is None:
            return False
        pending = self._unanswered.get(below[0])  # one dict lookup: atomic in CPython
        return pending is not None and not pending.ready()

    def _on_event(self, event: WatchedEvent) -> None:
        """The persistent watch's report of a create, change or delete at ``event.path``
        (kazoo's callback thread: only send reads). A key created is queued as new (its
        children are reported as they come); anything else known is read again; a child
        of a key not known yet is left to that key's read."""
        below = self._below_root(event.path)
        if self._closed or below is None:
            return
        rel, key, child = below
        with self._lock:
            if key not in self._kids:
                if not child and event.type != EventType.DELETED:
                    self._enqueue([key], everything=False)
                return
            if child and self._follow is not None and child not in self._follow:
                return
            self._read(rel)

    def _watch(self, event: WatchedEvent) -> None:
        # kazoo's event thread: only send reads, never wait for them.
        if self._closed or event.type == EventType.NONE or not event.path:
            return
        if event.path == self.root:
            if event.type == EventType.CHILD:
                self._list_root(False)
            return
        below = self._below_root(event.path)
        if below is None:
            return
        rel, key, child = below
        with self._lock:
            if key not in self._kids:
                return  # deleted since: nothing to follow
            self._read(rel, listing=not child and event.type == EventType.CHILD)
