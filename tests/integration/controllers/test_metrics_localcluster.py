"""Prometheus metrics of a real local cluster (ZooKeeper, pvcnoded, pvcapid processes): what
a scrape shows after a VM is applied, watch streams kept out of the API's latency histogram,
and the Grafana dashboard and alert rules naming only metrics that a scrape has."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import metric_value, wait_for
from tests.localcluster_fixture import RunningCluster, start_cluster

MONITORING = Path(__file__).resolve().parents[3] / "monitoring"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCluster]:
    started = start_cluster(tmp_path_factory.mktemp("metrics"), nodes=1)
    running = next(started)
    try:
        running.apply(
            {
                "apiVersion": "pvc/v1",
                "kind": "VirtualMachine",
                "metadata": {"name": "m1"},
                "spec": {"memory": "64Mi"},
            }
        )
        wait_for(lambda: phase(running, "m1") == "Running", 30, "m1 Running")
        yield running
    finally:
        started.close()  # the cluster goes down, and nothing of it may be left running


def phase(cluster: RunningCluster, vm: str) -> str | None:
    return (cluster.api("GET", f"/api/v1/vms/{vm}").json().get("status") or {}).get("phase")


def node_text(cluster: RunningCluster) -> str:
    return cluster.node_metrics("node1")


def api_text(cluster: RunningCluster) -> str:
    return cluster.api("GET", "/metrics").text


def test_pvcnoded_shows_reconciles_the_running_domain_and_a_fresh_heartbeat(
    cluster: RunningCluster,
) -> None:
    text = node_text(cluster)
    reconciles = metric_value(
        text, "pvc_node_reconcile_duration_seconds_count", controller="vm@node1"
    )
    assert reconciles is not None and reconciles > 0
    assert metric_value(text, "pvc_node_domains", node="node1", state="running") == 1
    age = metric_value(text, "pvc_node_heartbeat_age_seconds", node="node1")
    assert age is not None and 0 <= age < 10  # the keepalive is 5 s
    assert metric_value(text, "pvc_node_zookeeper_session_state", state="connected") == 1
    assert metric_value(text, "pvc_node_workqueue_depth", controller="vm@node1") is not None


def test_the_api_shows_each_vm_and_node_state(cluster: RunningCluster) -> None:
    text = api_text(cluster)
    assert metric_value(text, "pvc_vm_status_phase", vm="m1", phase="Running") == 1
    assert metric_value(text, "pvc_vm_status_phase", vm="m1", phase="Failed") == 0
    assert metric_value(text, "pvc_vm_info", vm="m1", node="node1", run_strategy="Always") == 1
    assert metric_value(text, "pvc_node_status_state", node="node1", state="run") == 1
    assert metric_value(text, "pvc_node_status_state", node="node1", state="dead") == 0
    assert metric_value(text, "pvc_node_status_ready", node="node1") == 1
    assert metric_value(text, "pvc_node_info", node="node1", coordinator="true") == 1


def test_a_watch_is_counted_and_gauged_but_not_timed(cluster: RunningCluster) -> None:
    route = {"method": "GET", "route": "/api/v1/vms", "code": "200"}
    before = api_text(cluster)
    with httpx.stream(
        "GET", f"{cluster.server}/api/v1/vms", params={"watch": "true"}, timeout=10
    ) as stream:
        assert stream.status_code == 200
        wait_for(
            lambda: (
                metric_value(api_text(cluster), "pvc_api_watch_streams", route="/api/v1/vms") == 1
            ),
            5,
            "the open watch gauged",
        )
    wait_for(
        lambda: metric_value(api_text(cluster), "pvc_api_watch_streams", route="/api/v1/vms") == 0,
        5,
        "the closed watch no longer gauged",
    )
    after = api_text(cluster)
    counted = "pvc_api_requests_total"
    timed = "pvc_api_request_duration_seconds_count"
    assert (metric_value(after, counted, **route) or 0) == (
        metric_value(before, counted, **route) or 0
    ) + 1
    assert metric_value(after, timed, **route) == metric_value(before, timed, **route)


def exposed_names(text: str) -> set[str]:
    """Every series name a scrape offers, counting families with no sample yet (a counter
    whose labels have not been seen: no fence happened)."""
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        names |= {s.name for s in family.samples}
        suffixes = {
            "counter": ["_total"],
            "histogram": ["_bucket", "_count", "_sum"],
        }.get(family.type, [""])
        names |= {family.name + suffix for suffix in suffixes}
    return names


def test_the_dashboard_and_alert_rules_name_only_scraped_metrics(
    cluster: RunningCluster,
) -> None:
    scraped = exposed_names(node_text(cluster)) | exposed_names(api_text(cluster))
    dashboard = json.loads((MONITORING / "grafana" / "pvc-cluster.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    exprs += [v["definition"] for v in dashboard["templating"]["list"] if "definition" in v]
    rules = yaml.safe_load((MONITORING / "prometheus" / "pvc-alerts.yml").read_text())
    exprs += [r["expr"] for g in rules["groups"] for r in g["rules"]]
    assert len(exprs) > 15
    named = {m for e in exprs for m in re.findall(r"\bpvc_[a-z_]+\b", e)}
    assert named - scraped == set(), f"not in a real scrape: {sorted(named - scraped)}"
