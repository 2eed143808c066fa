"""pvcnoded's Prometheus metrics, served on ``metrics.listen``:``metrics.port``.

One registry per process (not prometheus_client's global one). The hot path only bumps
counters and observes histograms; everything else (queue depth, heartbeat age, domains by
state, the ZooKeeper session) is read at scrape time from memory or the hypervisor, never
from ZooKeeper. Several daemons in one process (the chaos harness) each add a
``NodeSource``; their series differ by the ``node`` label.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from hypervisor import DomainDriver, DomainState, HypervisorError

log = logging.getLogger(__name__)

REGISTRY = CollectorRegistry()

RECONCILE_SECONDS = Histogram(
    "pvc_node_reconcile_duration_seconds",
    "Time one reconcile took, by controller (failed ones included)",
    ["controller"],
    registry=REGISTRY,
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
RECONCILE_ERRORS = Counter(
    "pvc_node_reconcile_errors",
    "Reconciles that raised (the key is retried with back-off), by controller",
    ["controller"],
    registry=REGISTRY,
)
FENCES = Counter(
    "pvc_fences",
    "Power-offs of a dead node this node (the primary) carried out, by fenced node and "
    "outcome (fenced: power-off confirmed; failed: not confirmed, retried with back-off)",
    ["node", "outcome"],
    registry=REGISTRY,
)
MIGRATIONS = Counter(
    "pvc_migrations",
    "Live migrations this node ran as their source, by kind (live) and outcome: each attempt "
    "succeeded or failed; per move, given_up (it keeps running here) or fell_back (moved "
    "with a shutdown instead)",
    ["kind", "outcome"],
    registry=REGISTRY,
)

MIGRATION_OUTCOMES = ("succeeded", "failed", "given_up", "fell_back")
for _outcome in MIGRATION_OUTCOMES:
    # At 0 from the start, so the first one shows in increase() and rate().
    MIGRATIONS.labels("live", _outcome)

ZOOKEEPER_STATES = ("connected", "suspended", "lost")


class Queued(Protocol):
    """What the runtime's Controller offers the queue-depth gauge."""

    name: str

    def queue_depth(self) -> int: ...


@dataclass(eq=False)
class NodeSource:
    """One daemon's scrape-time readings."""

    node: str
    driver: DomainDriver
    owner_tag: str
    """Only domains this cluster manages count (the store's root)."""
    heartbeat_age: Callable[[], float | None]
    """Seconds since the last successful heartbeat write; None before the first."""
    zookeeper_state: Callable[[], str]
    """kazoo's KazooState value: CONNECTED, SUSPENDED or LOST."""
    domain_states: list[str] = field(default_factory=lambda: [s.value for s in DomainState])


class _ScrapeTimeCollector(Collector):
    def __init__(self) -> None:
        self._lock = threading.Lock()
        # Weak: a daemon that failed before its shutdown (the chaos harness starts another)
        # leaves nothing behind to scrape.
        self._sources: weakref.WeakSet[NodeSource] = weakref.WeakSet()
        self._controllers: weakref.WeakSet[Queued] = weakref.WeakSet()

    def add_source(self, source: NodeSource) -> None:
        with self._lock:
            self._sources.add(source)

    def remove_source(self, source: NodeSource) -> None:
        with self._lock:
            self._sources.discard(source)

    def add_controller(self, controller: Queued) -> None:
        with self._lock:
            self._controllers.add(controller)

    def remove_controller(self, controller: Queued) -> None:
        with self._lock:
            self._controllers.discard(controller)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        with self._lock:
            sources = sorted(self._sources, key=lambda s: s.node)
            controllers = list(self._controllers)
        depth = GaugeMetricFamily(
            "pvc_node_workqueue_depth",
            "Keys waiting in a controller's work queue (due now or delayed)",
            labels=["controller"],
        )
        by_name: dict[str, int] = {}
        for controller in controllers:
            by_name[controller.name] = by_name.get(controller.name, 0) + controller.queue_depth()
        for name, count in sorted(by_name.items()):
            depth.add_metric([name], count)
        yield depth
        yield from self._node_families(sources)

    def _node_families(self, sources: list[NodeSource]) -> Iterator[GaugeMetricFamily]:
        age = GaugeMetricFamily(
            "pvc_node_heartbeat_age_seconds",
            "Seconds since this node last wrote its heartbeat to ZooKeeper successfully",
            labels=["node"],
        )
        domains = GaugeMetricFamily(
            "pvc_node_domains",
            "This cluster's libvirt domains on this node, by state (read at scrape time)",
            labels=["node", "state"],
        )
        hypervisor_up = GaugeMetricFamily(
            "pvc_node_hypervisor_up",
            "1 when the hypervisor answered the scrape's domain list, else 0",
            labels=["node"],
        )
        session = GaugeMetricFamily(
            "pvc_node_zookeeper_session_state",
            "This daemon's ZooKeeper session: 1 for its current state, 0 for the others",
            labels=["node", "state"],
        )
        for source in sources:
            seconds = source.heartbeat_age()
            if seconds is not None:
                age.add_metric([source.node], seconds)
            try:
                counts = dict.fromkeys(source.domain_states, 0)
                for domain in source.driver.list_managed():
                    if domain.owner_tag == source.owner_tag:
                        counts[domain.state.value] = counts.get(domain.state.value, 0) + 1
            except HypervisorError as exc:
                log.warning("event=metrics_domains_failed node=%s error=%s", source.node, exc)
                hypervisor_up.add_metric([source.node], 0)
            else:
                hypervisor_up.add_metric([source.node], 1)
                for state, count in counts.items():
                    domains.add_metric([source.node, state], count)
            current = source.zookeeper_state().lower()
            for state in ZOOKEEPER_STATES:
                session.add_metric([source.node, state], 1 if state == current else 0)
        yield from (age, domains, hypervisor_up, session)


SCRAPE_TIME = _ScrapeTimeCollector()
REGISTRY.register(SCRAPE_TIME)


def observe_reconcile(controller: str, started: float, failed: bool) -> None:
    """The runtime's one hook: after every reconcile (``started`` from perf_counter)."""
    RECONCILE_SECONDS.labels(controller).observe(time.perf_counter() - started)
    if failed:
        RECONCILE_ERRORS.labels(controller).inc()


def count_fence(node: str, confirmed: bool) -> None:
    FENCES.labels(node, "fenced" if confirmed else "failed").inc()


def count_migration(kind: str, outcome: str) -> None:
    MIGRATIONS.labels(kind, outcome).inc()


class MetricsServer:
    """The HTTP endpoint (prometheus_client's own server on REGISTRY) and this daemon's
    scrape-time source. ``port`` 0: no endpoint (the counters still count)."""

    def __init__(self, listen: str, port: int, source: NodeSource) -> None:
        self.listen = listen
        self.port = port
        self.source = source
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        SCRAPE_TIME.add_source(self.source)
        if self.port == 0:
            log.info("event=metrics_off node=%s", self.source.node)
            return
        try:
            self._server, self._thread = start_http_server(
                self.port, self.listen, registry=REGISTRY
            )
        except OSError as exc:
            # The node's work matters more than its metrics: run on, and say so loudly.
            log.error(
                "event=metrics_unavailable node=%s listen=%s port=%d error=%s",
                self.source.node,
                self.listen,
                self.port,
                exc,
            )
            return
        log.info(
            "event=metrics_serving node=%s listen=%s port=%d",
            self.source.node,
            self.listen,
            self.port,
        )

    def stop(self) -> None:
        SCRAPE_TIME.remove_source(self.source)
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            if self._thread is not None:
                self._thread.join(5.0)
            self._server = None
            log.info("event=metrics_stopped node=%s", self.source.node)
