"""Moves on libvirt's test driver, which cannot live-migrate: ``auto`` moves cold (and says
why), ``live`` fails with that reason and the VM stays where it runs, and ``pvcctl vm
migrate --wait`` tells the two apart by its exit code."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.helpers import vm_manifest, wait_for
from tests.localcluster_fixture import RunningCluster, start_cluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCluster]:
    yield from start_cluster(tmp_path_factory.mktemp("migrate-td"), nodes=2)


def status(cluster: RunningCluster, name: str) -> dict[str, Any]:
    return dict(cluster.api("GET", f"/api/v1/vms/{name}").json().get("status") or {})


def events(cluster: RunningCluster, name: str) -> list[dict[str, Any]]:
    items = cluster.api("GET", "/api/v1/events").json()["items"]
    return [e for e in items if e["involvedObject"]["name"] == name]


def scheduled(cluster: RunningCluster, name: str) -> str:
    conditions = status(cluster, name).get("conditions") or []
    return next((c["message"] for c in conditions if c["type"] == "Scheduled"), "")


def running_on(cluster: RunningCluster, name: str, node: str) -> bool:
    now = status(cluster, name)
    return now.get("node") == node and now.get("phase") == "Running"


def test_nodes_say_they_cannot_live_migrate(cluster: RunningCluster) -> None:
    for node in cluster.items("nodes"):
        assert "test driver" in node["status"]["liveMigrationProblem"]
        assert node["status"].get("migrationUri") is None


def test_auto_moves_cold_with_an_event_saying_why(cluster: RunningCluster) -> None:
    cluster.apply(vm_manifest("td-auto", method="auto"))
    wait_for(lambda: running_on(cluster, "td-auto", "node1"), 30, "td-auto on node1")
    result = cluster.pvcctl("vm", "migrate", "td-auto", "--to", "node2", "--wait")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "vm/td-auto runs on node2"
    assert running_on(cluster, "td-auto", "node2")
    fallback = [e for e in events(cluster, "td-auto") if e["reason"] == "MigrationFallback"]
    assert fallback and "cannot live-migrate" in fallback[0]["message"], fallback


def test_live_fails_with_the_reason_and_the_vm_keeps_running(cluster: RunningCluster) -> None:
    cluster.apply(vm_manifest("td-live", method="live"))
    wait_for(lambda: running_on(cluster, "td-live", "node1"), 30, "td-live on node1")
    result = cluster.pvcctl(
        "vm", "migrate", "td-live", "--to", "node2", "--wait", "--timeout", "60s"
    )
    assert result.returncode == 1, result.stdout
    assert "did not migrate to node2" in result.stderr
    assert "cannot live-migrate" in result.stderr
    now = status(cluster, "td-live")
    assert (now["node"], now["migration"]["state"]) == ("node1", "Failed")
    assert now["migration"]["target"] == "node2"
    failed = [e for e in events(cluster, "td-live") if e["reason"] == "MigrationFailed"]
    assert failed and "keeps running on node1" in failed[0]["message"]
    # The primary places it back where it runs; it never stopped there.
    seen: dict[str, Any] = {}

    def placed_back() -> bool:
        seen["now"] = (
            scheduled(cluster, "td-live"),
            cluster.api("GET", "/api/v1/nodes/node2").json()["status"]["domains"],
            status(cluster, "td-live"),
        )
        return seen["now"][0] == "placed on node1" and "td-live" not in seen["now"][1]

    try:
        wait_for(placed_back, 30, "td-live placed back on node1")
    except BaseException:
        print(seen)
        raise
    assert running_on(cluster, "td-live", "node1")
    assert status(cluster, "td-live")["failures"] == 0
    # Forced live is refused at once, saying why, with nothing written.
    forced = cluster.pvcctl("vm", "migrate", "td-live", "--to", "node2", "--live")
    assert forced.returncode == 1 and "cannot be live-migrated" in forced.stderr
    assert "test driver" in forced.stderr


def test_migrate_to_the_node_it_runs_on_is_refused(cluster: RunningCluster) -> None:
    cluster.apply(vm_manifest("td-self", method="auto"))
    wait_for(lambda: running_on(cluster, "td-self", "node1"), 30, "td-self on node1")
    result = cluster.pvcctl("vm", "migrate", "td-self", "--to", "node1")
    assert result.returncode == 1
    assert "already placed on 'node1'" in result.stderr and "409" in result.stderr
    assert running_on(cluster, "td-self", "node1")
