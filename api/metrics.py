"""/metrics in Prometheus' text format: requests by route and code, objects by kind and phase."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from api.cache import ApiCache
from schemas import VirtualMachine


class _ObjectCollector(Collector):
    """Read at scrape time from the watch cache: no ZooKeeper reads per scrape."""

    def __init__(self, cache: ApiCache) -> None:
        self.cache = cache

    def collect(self) -> Iterator[GaugeMetricFamily]:
        objects = GaugeMetricFamily("pvc_objects", "Objects per kind", labels=["kind"])
        for kind_cache in self.cache.kinds.values():
            objects.add_metric([kind_cache.cls.KIND], len(kind_cache))
        yield objects
        phases = GaugeMetricFamily("pvc_vms", "VirtualMachines per phase", labels=["phase"])
        for phase, count in sorted(self.cache.of(VirtualMachine).count_by("phase").items()):
            phases.add_metric([phase], count)
        yield phases


class ApiMetrics:
    def __init__(self, cache: ApiCache) -> None:
        # One registry per app (not the global one): tests build many apps in one process.
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "pvc_api_requests",
            "API requests by method, route and status code",
            ["method", "route", "code"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "pvc_api_request_duration_seconds",
            "API request latency by method, route and status code",
            ["method", "route", "code"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.registry.register(_ObjectCollector(cache))

    def observe(self, method: str, route: str, code: int, seconds: float) -> None:
        self.requests.labels(method, route, str(code)).inc()
        self.latency.labels(method, route, str(code)).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
