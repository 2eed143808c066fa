"""pvcnoded's metrics without a cluster: the runtime's reconcile hook, the queue-depth gauge,
and the HTTP endpoint's start, port clash and stop."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import httpx
import pytest

from controllers.metrics import REGISTRY, MetricsServer, NodeSource
from controllers.runtime import Backoff, Controller
from hypervisor import LibvirtDriver
from localcluster.process import free_port
from tests.helpers import wait_for


def sample(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def test_every_reconcile_is_timed_and_each_failure_counted() -> None:
    calls: list[str] = []

    def reconcile(key: str) -> float | None:
        calls.append(key)
        if len(calls) == 1:
            raise RuntimeError("first try fails")
        return None

    controller = Controller("unit-hook", reconcile, workers=1, backoff=Backoff(base=0.01))
    controller.start()
    try:
        controller.enqueue("a")
        wait_for(
            lambda: (
                sample("pvc_node_reconcile_duration_seconds_count", controller="unit-hook") == 2
            ),
            5,
            "two reconciles observed",
        )
        assert sample("pvc_node_reconcile_errors_total", controller="unit-hook") == 1
        controller.enqueue_after("later", 60)
        assert sample("pvc_node_workqueue_depth", controller="unit-hook") == 1
    finally:
        controller.stop()
    assert sample("pvc_node_workqueue_depth", controller="unit-hook") is None


@pytest.fixture(scope="module")
def driver() -> Iterator[LibvirtDriver]:
    driver = LibvirtDriver("test:///default")
    yield driver
    driver.close()


def source(driver: LibvirtDriver, node: str) -> NodeSource:
    return NodeSource(node, driver, "/unit", lambda: 1.5, lambda: "SUSPENDED")


def test_the_endpoint_serves_scrape_time_readings_and_stops(driver: LibvirtDriver) -> None:
    port = free_port()
    server = MetricsServer("127.0.0.1", port, source(driver, "hv-a"))
    server.start()
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    finally:
        server.stop()
    assert 'pvc_node_heartbeat_age_seconds{node="hv-a"} 1.5' in text
    assert 'pvc_node_zookeeper_session_state{node="hv-a",state="suspended"} 1.0' in text
    assert 'pvc_node_zookeeper_session_state{node="hv-a",state="connected"} 0.0' in text
    # test:///default's own domain carries no owner tag of this cluster: not counted.
    assert 'pvc_node_domains{node="hv-a",state="running"} 0.0' in text
    assert 'pvc_node_hypervisor_up{node="hv-a"} 1.0' in text
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
    assert sample("pvc_node_heartbeat_age_seconds", node="hv-a") is None


def test_a_taken_port_is_logged_and_the_daemon_runs_on(
    driver: LibvirtDriver, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    first = MetricsServer("127.0.0.1", port, source(driver, "hv-b"))
    second = MetricsServer("127.0.0.1", port, source(driver, "hv-c"))
    first.start()
    try:
        with caplog.at_level(logging.ERROR, logger="controllers.metrics"):
            second.start()  # does not raise
        assert "event=metrics_unavailable node=hv-c" in caplog.text
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        assert 'pvc_node_heartbeat_age_seconds{node="hv-c"} 1.5' in text  # still counted
    finally:
        second.stop()
        first.stop()
