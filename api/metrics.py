"""/metrics in Prometheus' text format: requests by route and code, objects by kind and phase,
and one set of state gauges per VM and per Node (kube-state-metrics style)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from api.cache import ApiCache
from schemas import DaemonState, Node, VirtualMachine, VMPhase

VM_PHASES = [p.value for p in VMPhase]
NODE_STATES = [s.value for s in DaemonState]


def _status(wire: dict[str, Any]) -> dict[str, Any]:
    return wire.get("status") or {}


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
        yield from self._vm_families()
        yield from self._node_families()

    def _vm_families(self) -> Iterator[GaugeMetricFamily]:
        phase = GaugeMetricFamily(
            "pvc_vm_status_phase",
            "1 for the VM's current phase, 0 for every other phase",
            labels=["vm", "phase"],
        )
        info = GaugeMetricFamily(
            "pvc_vm_info",
            "Always 1; the VM's node (empty: none), run strategy, vCPUs and memory as labels",
            labels=["vm", "node", "run_strategy", "vcpus", "memory"],
        )
        vms, _ = self.cache.of(VirtualMachine).list()
        for wire in vms:
            name = wire["metadata"]["name"]
            status, spec = _status(wire), wire.get("spec") or {}
            current = status.get("phase") or VMPhase.PENDING.value
            for value in VM_PHASES:
                phase.add_metric([name, value], 1 if value == current else 0)
            labels = [
                name,
                status.get("node") or "",
                str(spec.get("runStrategy", "")),
                str(spec.get("vcpus", "")),
                str(spec.get("memory", "")),
            ]
            info.add_metric(labels, 1)
        yield phase
        yield info

    def _node_families(self) -> Iterator[GaugeMetricFamily]:
        state = GaugeMetricFamily(
            "pvc_node_status_state",
            "1 for the node daemon's current state (init, run, shutdown, stop, dead, fenced), "
            "0 for the others",
            labels=["node", "state"],
        )
        ready = GaugeMetricFamily(
            "pvc_node_status_ready",
            "1 when the node's Ready condition is True (heartbeating, hypervisor usable)",
            labels=["node"],
        )
        info = GaugeMetricFamily(
            "pvc_node_info",
            "Always 1; the node's coordinator flag, router and domain states, version as labels",
            labels=["node", "coordinator", "router_state", "domain_state", "version"],
        )
        nodes, _ = self.cache.of(Node).list()
        for wire in nodes:
            name = wire["metadata"]["name"]
            status, spec = _status(wire), wire.get("spec") or {}
            current = status.get("daemonState") or DaemonState.INIT.value
            for value in NODE_STATES:
                state.add_metric([name, value], 1 if value == current else 0)
            conditions = status.get("conditions") or []
            is_ready = any(c.get("type") == "Ready" and c["status"] == "True" for c in conditions)
            ready.add_metric([name], 1 if is_ready else 0)
            labels = [
                name,
                str(bool(spec.get("coordinator"))).lower(),
                str(status.get("routerState") or ""),
                str(status.get("domainState") or ""),
                str(status.get("daemonVersion") or ""),
            ]
            info.add_metric(labels, 1)
        yield state
        yield ready
        yield info


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
        self.watches = Gauge(
            "pvc_api_watch_streams",
            "Watch streams (?watch=true) open now, by route; they last minutes, so they are "
            "counted in pvc_api_requests_total but kept out of the latency histogram",
            ["route"],
            registry=self.registry,
        )
        self.registry.register(_ObjectCollector(cache))

    def observe(
        self, method: str, route: str, code: int, seconds: float, *, watch: bool = False
    ) -> None:
        self.requests.labels(method, route, str(code)).inc()
        if not watch:
            self.latency.labels(method, route, str(code)).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
