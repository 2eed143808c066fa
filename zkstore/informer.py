"""List + watch a subtree (kazoo's TreeCache) and hand changed keys to a callback.

Nothing polls: the cache is filled by one list and kept by watches, and every
change below ``<root>/<name>`` reports ``name``. Callbacks run on kazoo's event
thread, so they must only enqueue work.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from kazoo.recipe.cache import TreeCache, TreeEvent
from kazoo.retry import KazooRetry

from schemas import Resource
from zkstore import paths
from zkstore.codec import decode
from zkstore.store import Store

log = logging.getLogger(__name__)

R = TypeVar("R", bound=Resource)


class Informer:
    def __init__(
        self, store: Store, relative_root: str, on_key: Callable[[str], None] | None = None
    ) -> None:
        self._store = store
        self._root = store.path(relative_root)
        self._listeners: list[Callable[[str], None]] = [on_key] if on_key else []
        self._initialized = threading.Event()
        self._loaded = 0  # events seen: the load's progress
        self._cache = TreeCache(store.client, self._root)
        self._cache.listen(self._on_event)

    def add_listener(self, on_key: Callable[[str], None]) -> None:
        self._listeners.append(on_key)

    def start(self, timeout: float = 30.0) -> None:
        # A server that has just come up may still drop the first connection.
        KazooRetry(max_tries=10, delay=0.1, max_delay=2.0)(
            self._store.client.ensure_path, self._root
        )
        self._cache.start()
        self._wait_loaded(timeout)

    def _wait_loaded(self, stall: float) -> None:
        """Wait while the load makes progress: a kind of 10,000 VMs takes a TreeCache tens
        of seconds to read (one znode after another), longer on a busy host, and a primary
        that gave up at a fixed deadline would start over and never finish (issue 16). It
        fails only when nothing arrives for ``stall`` seconds."""
        started = time.monotonic()
        seen, since = -1, started
        while not self._initialized.wait(min(stall, 5.0)):
            now = time.monotonic()
            if self._loaded != seen:
                seen, since = self._loaded, now
                log.info(
                    "event=informer_loading root=%s znodes=%d after=%.1fs",
                    self._root,
                    seen,
                    now - started,
                )
            elif now - since >= stall:
                raise TimeoutError(
                    f"informer on {self._root} made no progress for {stall:g}s ({seen} znodes read)"
                )

    def close(self) -> None:
        self._cache.close()

    def keys(self) -> list[str]:
        return sorted(self._cache.get_children(self._root) or ())

    def data(self, key: str, child: str | None = None) -> Any:
        path = f"{self._root}/{key}" + (f"/{child}" if child else "")
        node = self._cache.get_data(path)
        return decode(node.data) if node is not None else None

    def version(self, key: str) -> int | None:
        node = self._cache.get_data(f"{self._root}/{key}")
        return int(node.stat.mzxid) if node is not None and node.stat is not None else None

    def _on_event(self, event: TreeEvent) -> None:
        self._loaded += 1
        if event.event_type == TreeEvent.INITIALIZED:
            self._initialized.set()
            return
        if event.event_data is None:
            if event.event_type in (TreeEvent.CONNECTION_LOST, TreeEvent.CONNECTION_SUSPENDED):
                log.warning(
                    "event=informer_connection root=%s type=%s", self._root, event.event_type
                )
            return
        path: str = event.event_data.path
        if not path.startswith(self._root + "/"):
            return
        key = path[len(self._root) + 1 :].split("/", 1)[0]
        for listener in self._listeners:
            try:
                listener(key)
            except Exception:  # a listener bug must not kill the watch thread
                log.exception("event=informer_listener_failed root=%s key=%s", self._root, key)


class ResourceInformer(Informer, Generic[R]):
    """An informer over one kind that returns typed objects from its cache.

    Objects are parsed once per version and shared between callers: treat them
    as read-only (copy before changing one).
    """

    def __init__(
        self, store: Store, cls: type[R], on_key: Callable[[str], None] | None = None
    ) -> None:
        super().__init__(store, paths.kind_root(cls.PLURAL), on_key)
        self.cls = cls
        self._parsed: dict[str, tuple[tuple[int, int], R | None]] = {}

    def _versions(self, name: str) -> tuple[int, int] | None:
        spec = self._cache.get_data(f"{self._root}/{name}")
        if spec is None or spec.stat is None:
            return None
        status = self._cache.get_data(f"{self._root}/{name}/{paths.STATUS}")
        return int(spec.stat.mzxid), int(status.stat.mzxid) if status and status.stat else 0

    def get(self, name: str) -> R | None:
        versions = self._versions(name)
        if versions is None:
            self._parsed.pop(name, None)
            return None
        cached = self._parsed.get(name)
        if cached is not None and cached[0] == versions:
            return cached[1]
        obj = self._parse(name)
        self._parsed[name] = (versions, obj)
        return obj

    def _parse(self, name: str) -> R | None:
        raw = self.data(name)
        if raw is None:
            return None
        raw.setdefault("metadata", {})["resourceVersion"] = str(self.version(name))
        status = self.data(name, paths.STATUS)
        if status is not None:
            try:
                return self.cls.model_validate({**raw, "status": status})
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
