"""List + watch one kind's spec and status znodes, pipelined (a lighter TreeCache).

kazoo's TreeCache reads every znode below a kind (placement too) one request
pair at a time through its own queue; for 10,000 VMs that is tens of seconds
before a reader has a cache. This reads exactly what an API needs (spec, its
child list, status) with all requests in flight at once, and then follows the
watches those reads set.

Watch events are only hints to read again: state changes come from read
results alone. Each read gets a sequence number under the lock that also sends
it, so numbers follow the order ZooKeeper answers in; a result older than one
already applied to the same path is dropped, however the threads that deliver
results are scheduled. After every reconnect (watches may be gone:
kazoo does not re-send them) it reads everything again and drops what has
disappeared.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, Literal

from kazoo.exceptions import NoNodeError
from kazoo.protocol.states import EventType, KazooState, WatchedEvent

from zkstore import paths
from zkstore.codec import decode
from zkstore.store import Store

log = logging.getLogger(__name__)

Part = Literal["spec", "status", "children"]
# Requests in flight at once during a (re)load: bounded so memory stays flat.
_WINDOW = 3000


class KindWatch:
    def __init__(self, store: Store, plural: str, on_key: Callable[[str], None]) -> None:
        self._client = store.client
        self._root = store.path(paths.kind_root(plural))
        self._on_key = on_key
        self._lock = threading.Condition(threading.RLock())
        self._seq = 0
        self._applied: dict[tuple[Part, str], int] = {}
        self._spec: dict[str, tuple[Any, int]] = {}
        self._status: dict[str, tuple[Any, int]] = {}
        self._known: set[str] = set()
        self._pending = 0
        self._lost = False
        self._closed = False

    # -- lifecycle ---------------------------------------------------------------

    def start(self, timeout: float) -> None:
        self._client.ensure_path(self._root)
        self._client.add_listener(self._on_state)
        self._load(timeout)

    def close(self) -> None:
        self._closed = True
        self._client.remove_listener(self._on_state)

    def _load(self, timeout: float) -> None:
        """Read every object (again); the ones that are gone read as NoNode and drop out."""
        names = set(self._client.get_children(self._root, watch=self._watch))
        with self._lock:
            everything = sorted(names | self._known)
        for name in everything:
            with self._lock:
                self._lock.wait_for(lambda: self._pending < _WINDOW, timeout)
            self._read_object(name)
        with self._lock:
            if not self._lock.wait_for(lambda: self._pending == 0, timeout):
                raise TimeoutError(f"loading {self._root} took over {timeout}s")

    def _on_state(self, state: KazooState) -> None:
        # kazoo's connection thread: no blocking calls here.
        # kazoo does not send SetWatches on reconnect, and a server that lost its quorum
        # drops its watches: after any reconnect every watch may be gone, so read (and
        # watch) everything again, as kazoo's own recipes do.
        if state == KazooState.LOST:
            self._lost = True
        elif state == KazooState.CONNECTED and not self._closed:
            self._lost = False
            self._client.handler.spawn(self._reload)

    def _reload(self) -> None:
        try:
            self._load(600.0)
        except Exception:
            log.exception("event=kind_watch_reload_failed root=%s", self._root)

    # -- reads -------------------------------------------------------------------

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._spec)

    def snapshot(self, name: str) -> tuple[Any, int, Any, int] | None:
        """(spec document, its mzxid, status document or None, its mzxid or 0)."""
        with self._lock:
            spec = self._spec.get(name)
            if spec is None:
                return None
            status = self._status.get(name, (None, 0))
            return spec[0], spec[1], status[0], status[1]

    # -- the read/apply loop -------------------------------------------------------

    def _read_object(self, name: str) -> None:
        with self._lock:
            self._known.add(name)
        for part in ("spec", "children", "status"):
            self._read(part, name)  # type: ignore[arg-type]

    def _read(self, part: Part, name: str) -> None:
        path = f"{self._root}/{name}" + ("/" + paths.STATUS if part == "status" else "")
        with self._lock:
            if self._closed:
                return
            self._seq += 1
            seq = self._seq
            self._pending += 1
            if part == "children":
                result = self._client.get_children_async(path, watch=self._watch)
            else:
                result = self._client.get_async(path, watch=self._watch)
        result.rawlink(lambda done: self._apply(part, name, seq, done))

    def _apply(self, part: Part, name: str, seq: int, done: Any) -> None:
        changed = False
        try:
            try:
                value = done.get()
            except NoNodeError:
                value = None
            except Exception as exc:
                # A dropped connection: the reload after reconnecting reads it again.
                log.warning(
                    "event=kind_watch_read_failed path=%s/%s error=%r", self._root, name, exc
                )
                return
            with self._lock:
                if seq <= self._applied.get((part, name), 0):
                    return  # a newer read of this path already landed
                self._applied[(part, name)] = seq
                if part == "spec":
                    changed = self._apply_spec(name, value)
                elif part == "status":
                    changed = self._apply_status(name, value)
                elif value is not None and paths.STATUS in value and name not in self._status:
                    self._read("status", name)  # status appeared: read it, and watch it
        finally:
            with self._lock:
                self._pending -= 1
                self._lock.notify_all()
        if changed:
            self._on_key(name)

    def _apply_spec(self, name: str, value: Any) -> bool:
        if value is None:
            self._known.discard(name)
            gone = self._spec.pop(name, None) is not None
            self._status.pop(name, None)
            return gone
        data, stat = value
        self._spec[name] = (decode(data), int(stat.mzxid))
        return True

    def _apply_status(self, name: str, value: Any) -> bool:
        if name not in self._known:
            return False  # a late answer about an object deleted since
        if value is None:
            return self._status.pop(name, None) is not None
        data, stat = value
        self._status[name] = (decode(data), int(stat.mzxid))
        return name in self._spec

    def _watch(self, event: WatchedEvent) -> None:
        # kazoo's event thread: only send reads, never wait for them.
        if self._closed or event.type == EventType.NONE or not event.path:
            return
        if event.path == self._root:
            self._client.get_children_async(self._root, watch=self._watch).rawlink(
                self._on_root_children
            )
            return
        relative = event.path[len(self._root) + 1 :]
        name, _, child = relative.partition("/")
        if child == paths.STATUS:
            self._read("status", name)
        elif not child:
            self._read("children" if event.type == EventType.CHILD else "spec", name)

    def _on_root_children(self, done: Any) -> None:
        try:
            names = set(done.get())
        except Exception as exc:
            log.warning("event=kind_watch_list_failed root=%s error=%r", self._root, exc)
            return
        with self._lock:
            new = names - self._known
        for name in sorted(new):
            self._read_object(name)
