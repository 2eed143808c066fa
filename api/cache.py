"""The API's watch cache: one KindWatch (zkstore) per kind, serving lists, gets and watches.

Lists are served from memory (kept by ZooKeeper watches, never by polling), so
``get vms`` over thousands of objects costs no ZooKeeper reads. The cache also
keeps a bounded ring of the changes it saw, which is what ``?watch=true``
replays from.

Positions ("resourceVersions" of a list or a watch event) are ZooKeeper zxids,
so they mean the same thing on every API instance. An object's position is
the highest modification zxid of its spec and status znodes; a deletion,
whose zxid ZooKeeper does not report, takes the highest position the cache
had seen and is replayed to any client at or below it (at least once, never
lost). A client asking to resume from a position older than the ring's floor
(the cache's start, or the oldest event evicted from the ring) gets 410.
"""

from __future__ import annotations

import asyncio
import bisect
import builtins
import json
import logging
import threading
import time
import typing
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

import orjson

from schemas import KINDS, Resource
from schemas.meta import Model
from zkstore import Selector, Store
from zkstore.kindwatch import KindWatch

log = logging.getLogger(__name__)

EventType = Literal["ADDED", "MODIFIED", "DELETED"]


class Expired(Exception):
    """The position asked for is older than what this cache can replay."""

    def __init__(self, asked: int, floor: int) -> None:
        self.asked = asked
        self.floor = floor
        super().__init__(
            f"resourceVersion {asked} is too old to resume from (this server can replay "
            f"from {floor} on); list again and watch from the list's resourceVersion"
        )


@dataclass(frozen=True)
class Cached:
    wire: dict[str, Any]
    pos: int
    spec_version: int
    labels: dict[str, str]

    @cached_property
    def json(self) -> str:
        """The object as compact JSON, made once per version (at its first list): a list
        of 10,000 VMs joins these instead of encoding every object again. orjson makes it
        (some 10 times faster than the standard library: the first list after a converge
        encodes every VM, issue 16); an object with non-ASCII text (which orjson writes
        unescaped) or a number orjson refuses goes through the standard library, as all did
        before."""
        try:
            made = orjson.dumps(self.wire)
        except TypeError:  # an integer beyond 64 bits
            made = b"\x80"
        if made.isascii():
            return made.decode()
        return json.dumps(self.wire, separators=(",", ":"))


@dataclass(frozen=True)
class WatchEvent:
    type: EventType
    pos: int
    wire: dict[str, Any]
    labels: dict[str, str]

    def line(self) -> dict[str, Any]:
        return {"type": self.type, "object": self.wire, "resourceVersion": str(self.pos)}


@dataclass(eq=False)
class Subscriber:
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[WatchEvent | None] = field(default_factory=asyncio.Queue)


def status_model(cls: type[Resource]) -> type[Model] | None:
    """The model of ``cls``'s status (its ``status`` field is that model or None)."""
    annotation = cls.model_fields["status"].annotation
    for arg in typing.get_args(annotation) or (annotation,):
        if isinstance(arg, type) and issubclass(arg, Model):
            return arg
    return None


class KindCache:
    def __init__(self, store: Store, cls: type[Resource], ring_size: int) -> None:
        self.cls = cls
        self._store = store
        self._watch = KindWatch(store, cls.PLURAL, self._on_key)
        self._status_model = status_model(cls)
        self._lock = threading.Condition()
        self._objects: dict[str, Cached] = {}
        self._names: list[str] = []  # sorted, so lists come out in name order
        self._ring: deque[WatchEvent] = deque()
        self._ring_size = ring_size
        self._floor = 0
        self._max_pos = 0
        self._subscribers: set[Subscriber] = set()
        self.ready = threading.Event()
        """Set once the initial load is done; until then lists are read from the store."""

    # -- lifecycle -----------------------------------------------------------

    def start(self, timeout: float) -> None:
        self._watch.start(timeout)
        with self._lock:
            self._ring.clear()
        # Changes up to the server's zxid now are part of the initial state, not
        # replayable; any later change reaches us as an event after this answer.
        self._store.client.sync(self._store.root or "/")
        with self._lock:
            self._floor = max(self._max_pos, int(self._store.client.last_zxid or 0))
            self._max_pos = self._floor
        self.ready.set()

    def close(self) -> None:
        self._watch.close()
        with self._lock:
            for sub in list(self._subscribers):
                sub.loop.call_soon_threadsafe(sub.queue.put_nowait, None)
            self._subscribers.clear()

    # -- reads -----------------------------------------------------------------

    @property
    def resource_version(self) -> int:
        return self._max_pos

    def names(self) -> list[str]:
        """Every object's name, sorted (what shell completion asks for)."""
        with self._lock:
            return list(self._names)

    def list(self, selector: Selector | None = None) -> tuple[list[dict[str, Any]], int]:
        with self._lock:
            objects = [self._objects[n] for n in self._names]
            pos = self._max_pos
        return [o.wire for o in objects if selector is None or selector.matches(o.labels)], pos

    def list_json(self, selector: Selector | None = None) -> tuple[builtins.list[str], int]:
        """``list`` with each object as its compact JSON text."""
        with self._lock:
            objects = [self._objects[n] for n in self._names]
            pos = self._max_pos
        return [o.json for o in objects if selector is None or selector.matches(o.labels)], pos

    def get(self, name: str) -> dict[str, Any] | None:
        with self._lock:
            cached = self._objects.get(name)
        return cached.wire if cached else None

    def count_by(self, key: str) -> dict[str, int]:
        """Objects per value of a status field (e.g. VM phase)."""
        counts: dict[str, int] = {}
        with self._lock:
            for cached in self._objects.values():
                value = str((cached.wire.get("status") or {}).get(key) or "Unknown")
                counts[value] = counts.get(value, 0) + 1
        return counts

    def __len__(self) -> int:
        return len(self._objects)

    def wait_for_write(
        self, name: str, spec_version: int | None, timeout: float, *, or_gone: bool = False
    ) -> bool:
        """Block until the cache shows a write this API made (None: the object's deletion);
        with ``or_gone``, also once the object is gone (a deletion marked, then finished by
        its node before the cache saw the mark).

        This gives a client read-your-writes through one instance, although
        reads come from a cache that watches catch up a few milliseconds later.
        """

        def caught_up() -> bool:
            cached = self._objects.get(name)
            if spec_version is None:
                return cached is None
            if cached is None:
                return or_gone
            return cached.spec_version >= spec_version

        with self._lock:
            return self._lock.wait_for(caught_up, timeout)

    # -- watch -----------------------------------------------------------------

    def subscribe(
        self, loop: asyncio.AbstractEventLoop, since: int | None
    ) -> tuple[Subscriber, builtins.list[WatchEvent]]:
        """Register a watcher; returns it with the events to send first.

        Without ``since`` those are ADDED events for every object (kubectl's
        watch without a resourceVersion); with it, the ring's events after it.
        """
        with self._lock:
            if since is None:
                first = [
                    WatchEvent("ADDED", c.pos, c.wire, c.labels)
                    for c in (self._objects[n] for n in self._names)
                ]
            else:
                if since < self._floor:
                    raise Expired(since, self._floor)
                first = [
                    e
                    for e in self._ring
                    if e.pos > since or (e.type == "DELETED" and e.pos >= since)
                ]
            sub = Subscriber(loop)
            self._subscribers.add(sub)
        return sub, first

    def unsubscribe(self, sub: Subscriber) -> None:
        with self._lock:
            self._subscribers.discard(sub)

    # -- the informer's callback (kazoo's event thread: no blocking here) -------

    def _build(self, name: str) -> tuple[Resource, int, int] | None:
        """The object as stored now, with its spec mzxid and its position."""
        found = self._watch.snapshot(name)
        if found is None:
            return None
        spec, spec_version, status, status_version = found
        raw = {**spec, "metadata": {**spec.get("metadata", {})}}
        raw["metadata"]["resourceVersion"] = str(spec_version)
        candidates = [{**raw, "status": status}, raw] if status is not None else [raw]
        for candidate in candidates:
            try:
                obj = self.cls.model_validate(candidate)
            except ValueError:
                # A status from a newer or older controller must not hide the spec.
                log.warning("event=unreadable_object kind=%s name=%s", self.cls.KIND, name)
                continue
            return obj, spec_version, max(spec_version, status_version)
        return None

    def _status_only(self, name: str, previous: Cached | None) -> Cached | None:
        """The object with only its status read again, when only its status changed since
        ``previous``: the spec part is the one already validated (a VM's status is written
        two or three times as it starts; each re-validated the whole VM, issue 16)."""
        if previous is None or self._status_model is None:
            return None
        found = self._watch.status(name)
        if found is None or found[0] != previous.spec_version:
            return None
        _, document, status_version = found
        try:
            status = self._status_model.model_validate(document)
        except ValueError:
            return None  # the whole object is built, as it says what to do then
        wire = {**previous.wire, "status": status.wire()}
        pos = max(previous.spec_version, status_version)
        return Cached(wire, pos, previous.spec_version, previous.labels)

    def _on_key(self, name: str) -> None:
        with self._lock:
            known = self._objects.get(name)
        cached = self._status_only(name, known)
        built = self._build(name) if cached is None else None
        obj = built[0] if built else None
        with self._lock:
            previous = self._objects.get(name)
            if obj is None and cached is None:
                if previous is None:
                    return
                del self._objects[name]
                self._names.pop(bisect.bisect_left(self._names, name))
                event = WatchEvent("DELETED", self._max_pos, previous.wire, previous.labels)
            else:
                if cached is None:
                    assert built is not None and obj is not None
                    _, spec_version, pos = built
                    cached = Cached(obj.wire(), pos, spec_version, dict(obj.metadata.labels))
                pos = cached.pos
                if previous is not None and pos <= previous.pos:
                    return  # placement only, or a status removed as part of a delete
                self._objects[name] = cached
                if previous is None:
                    bisect.insort(self._names, name)
                self._max_pos = max(self._max_pos, pos)
                kind: EventType = "ADDED" if previous is None else "MODIFIED"
                event = WatchEvent(kind, pos, cached.wire, cached.labels)
            self._ring.append(event)
            while len(self._ring) > self._ring_size:
                self._floor = max(self._floor, self._ring.popleft().pos)
            for sub in self._subscribers:
                sub.loop.call_soon_threadsafe(sub.queue.put_nowait, event)
            self._lock.notify_all()


class ApiCache:
    """One KindCache per kind."""

    def __init__(self, store: Store, ring_size: int = 10_000) -> None:
        self.kinds: dict[str, KindCache] = {
            cls.PLURAL: KindCache(store, cls, ring_size) for cls in KINDS
        }

    def start(self, timeout: float = 60.0) -> None:
        for cache in self.kinds.values():
            cache.start(timeout)

    def start_in_background(
        self, timeout: float, on_loaded: Callable[[], None] | None = None
    ) -> threading.Thread:
        """Load in a thread: a big cluster takes a while (~0.7 s per 1,000 VMs), and the API
        should answer meanwhile (lists from the store, watches once loaded)."""

        def load() -> None:
            try:
                self.start(timeout)
            except Exception:
                log.exception("event=watch_cache_load_failed")
                return
            if on_loaded is not None:
                on_loaded()

        thread = threading.Thread(target=load, name="watch-cache-load", daemon=True)
        thread.start()
        return thread

    def wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        return all(
            cache.ready.wait(max(0.0, deadline - time.monotonic())) for cache in self.kinds.values()
        )

    def close(self) -> None:
        for cache in self.kinds.values():
            cache.close()

    def of(self, cls: type[Resource]) -> KindCache:
        return self.kinds[cls.PLURAL]
