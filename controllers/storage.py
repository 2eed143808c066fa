"""A node's side of storage pools: a backend per pool (hypervisor/storage), and the prober
that tells, in this node's status, which pools it reaches, with their space."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from hypervisor import DomainDriver, HypervisorError
from hypervisor.storage import StorageError, VolumeStore
from hypervisor.storage.folder import FolderVolumes
from hypervisor.storage.rbd import RbdVolumes
from schemas import NodePool, PoolType, StoragePool, utcnow
from zkstore import ResourceInformer, Store
from zkstore.secrets import SecretMissing

log = logging.getLogger(__name__)

# Fixed, so every node names a pool's libvirt secret alike (a VM's XML moves with it).
_SECRET_NAMESPACE = uuid.UUID("6f1c1d2e-3a4b-5c6d-8e9f-a0b1c2d3e4f5")

PROBE_INTERVAL = 15.0
"""Seconds between looks at every pool (sooner when a pool is added or changed)."""
PROBE_TIMEOUT = 10.0
"""The longest one look at one pool takes before it counts as unreachable."""


def secret_uuid(pool: str) -> str:
    """The libvirt secret holding an rbd pool's cephx key, alike on every node."""
    return str(uuid.uuid5(_SECRET_NAMESPACE, f"pvc-storagepool-{pool}"))


def volume_store(pool: StoragePool, timeout: float = PROBE_TIMEOUT) -> VolumeStore:
    """The backend of ``pool`` on this node."""
    spec = pool.spec
    if spec.type == PoolType.RBD:
        assert spec.rbd is not None  # the schema's rule
        return RbdVolumes(
            list(spec.rbd.monitors),
            spec.rbd.pool,
            spec.rbd.user,
            spec.rbd.key.get_secret_value(),
            secret_uuid(pool.name),
            timeout=timeout,
        )
    assert spec.path is not None  # the schema's rule
    return FolderVolumes(spec.path, timeout=timeout)


def ensure_secret(driver: DomainDriver, pool: StoragePool) -> None:
    """Put an rbd pool's key in this node's libvirt secret (nothing for other types)."""
    if pool.spec.type != PoolType.RBD or pool.spec.rbd is None:
        return
    rbd = pool.spec.rbd
    driver.ensure_ceph_secret(
        secret_uuid(pool.name), f"pvc {pool.name} client.{rbd.user}", rbd.key.get_secret_value()
    )


class PoolProber:
    """Looks at every StoragePool from this node, every ``interval`` seconds (at once when
    one is added or changed), each bounded by ``timeout``; ``latest()`` goes into the
    node's heartbeat. For rbd pools it also keeps the key in this node's libvirt secret."""

    def __init__(
        self,
        store: Store,
        driver: DomainDriver,
        node: str,
        *,
        on_change: Callable[[], None] | None = None,
        interval: float = PROBE_INTERVAL,
        timeout: float = PROBE_TIMEOUT,
    ) -> None:
        self.store = store
        self.driver = driver
        self.node = node
        self.interval = interval
        self.timeout = timeout
        self._on_change = on_change or (lambda: None)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._latest: dict[str, NodePool] = {}
        self._thread: threading.Thread | None = None
        self._specs: dict[str, int | None] = {}  # pool -> the spec version last looked at
        self.pools: ResourceInformer[StoragePool] = ResourceInformer(
            store, StoragePool, self._on_pool
        )

    def _on_pool(self, name: str) -> None:
        """A pool added, changed or removed: look at once. Not for its status, which the
        primary rewrites as the nodes' reports come in (looking again for each would feed
        it more reports)."""
        version = self.pools.version(name)
        with self._lock:
            if name in self._specs and self._specs[name] == version:
                return
            self._specs[name] = version
        self._wake.set()

    def start(self) -> None:
        self.pools.start()
        self._thread = threading.Thread(target=self._run, name=f"pools@{self.node}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self.pools.close()
        if self._thread is not None:
            self._thread.join(timeout=self.timeout + 5)

    def latest(self) -> list[NodePool]:
        with self._lock:
            return [self._latest[name] for name in sorted(self._latest)]

    def _run(self) -> None:
        backoff = 1.0
        while not self._stop.is_set():
            try:
                self.look()
                backoff = 1.0
                self._wake.wait(self.interval)
            except Exception:
                log.exception("event=pool_probe_failed node=%s retry_in=%.0fs", self.node, backoff)
                self._wake.wait(backoff)
                backoff = min(backoff * 2, 30.0)
            self._wake.clear()

    def look(self) -> list[NodePool]:
        """Look at every pool now (in parallel, each bounded); the states found."""
        names = self.pools.keys()  # an informer, not a dict
        pools = [p for name in names if (p := self.pools.get(name)) is not None]
        if pools:
            with ThreadPoolExecutor(max_workers=min(8, len(pools))) as workers:
                found = list(workers.map(self._probe, pools))
        else:
            found = []
        states = {s.pool: s for s in found}
        with self._lock:
            before = {k: (v.reachable, v.message) for k, v in self._latest.items()}
            self._latest = states
        after = {k: (v.reachable, v.message) for k, v in states.items()}
        if before != after:
            for name, (reachable, message) in sorted(after.items()):
                if before.get(name) != (reachable, message):
                    log.info(
                        "event=pool_state node=%s pool=%s reachable=%s message=%r",
                        self.node,
                        name,
                        reachable,
                        message,
                    )
            self._on_change()
        return self.latest()

    def _probe(self, pool: StoragePool) -> NodePool:
        started = time.monotonic()
        try:
            pool = self.store.reveal(pool)  # an rbd pool's key, for this node's libvirt
            usage = volume_store(pool, self.timeout).probe()
            ensure_secret(self.driver, pool)
        except (StorageError, HypervisorError, OSError, SecretMissing) as exc:
            message = str(exc)
            return NodePool(
                pool=pool.name,
                type=pool.spec.type.value,
                reachable=False,
                message=message[:300],
                checked=utcnow(),
            )
        log.debug(
            "event=pool_probed node=%s pool=%s took=%.3fs",
            self.node,
            pool.name,
            time.monotonic() - started,
        )
        return NodePool(
            pool=pool.name,
            type=pool.spec.type.value,
            reachable=True,
            capacity=usage.capacity,
            free=usage.free,
            checked=utcnow(),
        )
