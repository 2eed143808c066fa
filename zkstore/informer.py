"""List + watch a subtree and hand changed keys to listeners (zkstore.subtree underneath).

Nothing polls: the cache is filled by one pipelined list and kept by watches, and every
change at or below ``<root>/<key>`` (the key created, changed or deleted, a child appearing,
changing or going) reports ``key``, during the initial load too. The cache is two levels
deep, all that the roots in use need: a kind's root (key = an object; children = its status
and placement), ``paths.LEASES_NODES`` and ``paths.node_index(node)`` (keys with data and
no children). It keeps each znode's raw bytes and mzxid, and decodes on ``data``.
Listeners run on kazoo's completion thread, so they must only enqueue.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Collection
from typing import Any, Generic, TypeVar

from kazoo.retry import KazooRetry

from schemas import Resource
from zkstore import paths
from zkstore.codec import decode
from zkstore.store import Store
from zkstore.subtree import Node, SubtreeWatch

log = logging.getLogger(__name__)

R = TypeVar("R", bound=Resource)

# Parsed objects kept per informer, the most recently read first out last. Raw bytes are kept
# for every object; a parsed one costs several times that (10,000 VMs parsed held about
# 125 MB in the primary), and most are read once per version, when they change.
KEEP_PARSED = 2048


class Informer:
    def __init__(
        self,
        store: Store,
        relative_root: str,
        on_key: Callable[[str], None] | None = None,
        *,
        children: Collection[str] | None = None,
    ) -> None:
        """``children``: the only children a key can have (``()`` for none), read without
        listing each key; by default every child, found by listing (a request more a key)."""
        self._store = store
        self._root = store.path(relative_root)
        self._listeners: list[Callable[[str], None]] = [on_key] if on_key else []
        self._tree = SubtreeWatch(store.client, self._root, self._on_change, children)

    def add_listener(self, on_key: Callable[[str], None]) -> None:
        self._listeners.append(on_key)

    def start(self, timeout: float = 30.0) -> None:
        """Return once the whole subtree is loaded; fail only when the load makes no
        progress for ``timeout`` seconds (10,000 VMs take a while on a busy host)."""
        # A server that has just come up may still drop the first connection.
        KazooRetry(max_tries=10, delay=0.1, max_delay=2.0)(
            self._store.client.ensure_path, self._root
        )
        self._tree.start(timeout)

    def _wait_loaded(self, stall: float) -> None:
        self._tree.wait_loaded(stall)

    def close(self) -> None:
        self._tree.close()

    def keys(self) -> list[str]:
        return self._tree.keys()

    def data(self, key: str, child: str | None = None) -> Any:
        node = self._tree.node(key, child)
        return decode(node[0]) if node is not None else None

    def raw(self, key: str, child: str | None = None) -> bytes | None:
        """The znode's bytes as stored (JSON, zkstore.codec), not decoded: a scan of every
        object can look for a word in them before it decodes one."""
        node = self._tree.node(key, child)
        return node[0] if node is not None else None

    def version(self, key: str) -> int | None:
        node = self._tree.node(key)
        return node[1] if node is not None else None

    def _on_change(self, key: str) -> None:
        for listener in self._listeners:
            try:
                listener(key)
            except Exception:  # a listener bug must not stop the others
                log.exception("event=informer_listener_failed root=%s key=%s", self._root, key)


class ResourceInformer(Informer, Generic[R]):
    """An informer over one kind that returns typed objects from its cache.

    Objects are parsed once per version and shared between callers: treat them
    as read-only (copy before changing one). The last ``keep_parsed`` objects read stay
    parsed; an older one is parsed again from the cached bytes when read.
    """

    def __init__(
        self,
        store: Store,
        cls: type[R],
        on_key: Callable[[str], None] | None = None,
        keep_parsed: int = KEEP_PARSED,
    ) -> None:
        # An object's only children: its status, and a VM's placement.
        children = (paths.STATUS, paths.PLACEMENT) if cls.PLURAL == "vms" else (paths.STATUS,)
        super().__init__(store, paths.kind_root(cls.PLURAL), on_key, children=children)
        self.cls = cls
        self._keep = keep_parsed
        self._parsed: OrderedDict[str, tuple[tuple[int, int], R | None]] = OrderedDict()
        self._parsed_lock = threading.Lock()

    def get(self, name: str) -> R | None:
        # Parsed once per (spec mzxid, status mzxid); spec and status taken together, so
        # the object parsed is the one its versions name.
        spec, status = self._tree.pair(name, paths.STATUS)
        if spec is None:
            with self._parsed_lock:
                self._parsed.pop(name, None)
            return None
        versions = (spec[1], status[1] if status is not None else 0)
        with self._parsed_lock:
            cached = self._parsed.get(name)
            if cached is not None and cached[0] == versions:
                self._parsed.move_to_end(name)
                return cached[1]
        obj = self._parse(name, spec, status)
        with self._parsed_lock:
            self._parsed[name] = (versions, obj)
            self._parsed.move_to_end(name)
            while len(self._parsed) > self._keep:
                self._parsed.popitem(last=False)
        return obj

    def _parse(self, name: str, spec: Node, status: Node | None) -> R | None:
        raw = decode(spec[0])
        if raw is None:
            return None
        raw.setdefault("metadata", {})["resourceVersion"] = str(spec[1])
        if status is not None and (document := decode(status[0])) is not None:
            try:
                return self.cls.model_validate({**raw, "status": document})
            except ValueError:
                log.warning("event=unreadable_status kind=%s name=%s", self.cls.KIND, name)
        try:
            return self.cls.model_validate(raw)
        except ValueError:
            log.exception("event=informer_bad_object kind=%s name=%s", self.cls.KIND, name)
            return None

    def placement_raw(self, name: str) -> Any:
        return self.data(name, paths.PLACEMENT)

    def objects(self) -> list[R]:
        return [obj for name in self.keys() if (obj := self.get(name)) is not None]
