"""Real pvcnoded processes: a node killed with SIGKILL and started again converges."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import wait_for
from tests.localcluster_fixture import RunningCluster, start_cluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCluster]:
    yield from start_cluster(tmp_path_factory.mktemp("restart"))


def vm(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "pvc/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": name},
        "spec": {"memory": "128Mi", **spec},
    }


def placed(cluster: RunningCluster) -> dict[str, str | None]:
    return {
        v["metadata"]["name"]: (v.get("status") or {}).get("node") for v in cluster.items("vms")
    }


def all_running(cluster: RunningCluster) -> bool:
    return all((v.get("status") or {}).get("phase") == "Running" for v in cluster.items("vms"))


def domains_by_node(cluster: RunningCluster) -> dict[str, list[str]]:
    return {n["metadata"]["name"]: n["status"]["domains"] for n in cluster.items("nodes")}


def test_sigkilled_node_converges_without_duplicates(cluster: RunningCluster) -> None:
    response = cluster.api("POST", "/api/v1/apply", json=[vm(f"r{i}") for i in range(6)])
    assert response.status_code == 200, response.text
    wait_for(lambda: all_running(cluster), 30, "six VMs Running")
    where = placed(cluster)
    victim = max(sorted(set(where.values())), key=lambda n: list(where.values()).count(n))
    assert victim is not None
    mine = sorted(name for name, node in where.items() if node == victim)
    before = next(n for n in cluster.items("nodes") if n["metadata"]["name"] == victim)
    last_beat = before["status"]["lastHeartbeat"]

    cluster.cluster.kill_node(victim)
    cluster.cluster.start_node(victim)

    def converged() -> bool:
        node = next(n for n in cluster.items("nodes") if n["metadata"]["name"] == victim)
        fresh = node["status"]["lastHeartbeat"] > last_beat
        return (
            fresh and node["status"]["daemonState"] == "run" and node["status"]["domains"] == mine
        )

    wait_for(converged, 40, f"{victim} to come back running exactly {mine}")
    assert placed(cluster) == where  # nothing moved
    running = [d for domains in domains_by_node(cluster).values() for d in domains]
    assert sorted(running) == sorted(where)  # every VM once, none twice
    assert all_running(cluster)


def test_deleted_vm_domain_goes_away(cluster: RunningCluster) -> None:
    assert cluster.api("POST", "/api/v1/apply", json=[vm("gone")]).status_code == 200
    wait_for(lambda: placed(cluster).get("gone"), 30, "gone to be placed")
    node = placed(cluster)["gone"]
    wait_for(lambda: "gone" in domains_by_node(cluster)[str(node)], 30, "its domain to run")
    assert cluster.api("DELETE", "/api/v1/vms/gone").status_code == 200
    wait_for(lambda: "gone" not in domains_by_node(cluster)[str(node)], 30, "its domain to go")


def test_halted_vm_is_stopped_and_started_again(cluster: RunningCluster) -> None:
    assert cluster.api("POST", "/api/v1/apply", json=[vm("toggle")]).status_code == 200
    wait_for(lambda: placed(cluster).get("toggle"), 30, "toggle to be placed")
    node = str(placed(cluster)["toggle"])
    halted = vm("toggle", runStrategy="Halted", shutdownTimeout="1s")
    assert cluster.api("POST", "/api/v1/apply", json=[halted]).status_code == 200

    def phase() -> str:
        return str(cluster.api("GET", "/api/v1/vms/toggle").json()["status"]["phase"])

    wait_for(lambda: phase() == "Stopped", 30, "toggle to stop")
    wait_for(lambda: "toggle" not in domains_by_node(cluster)[node], 30, "its domain to stop")
    assert cluster.api("POST", "/api/v1/apply", json=[vm("toggle")]).status_code == 200
    wait_for(lambda: phase() == "Running", 30, "toggle to run again")
    wait_for(lambda: "toggle" in domains_by_node(cluster)[node], 30, "its domain to run")


def test_vm_too_big_for_any_node_is_unschedulable_with_reasons(cluster: RunningCluster) -> None:
    assert cluster.api("POST", "/api/v1/apply", json=[vm("huge", memory="64Gi")]).status_code == 200

    def scheduled_condition() -> dict[str, Any] | None:
        status = cluster.api("GET", "/api/v1/vms/huge").json().get("status") or {}
        return next((c for c in status.get("conditions", []) if c["type"] == "Scheduled"), None)

    cond = wait_for(scheduled_condition, 30, "a Scheduled condition on huge")
    assert cond["status"] == "False" and cond["reason"] == "Unschedulable"
    for node in ("node1", "node2", "node3"):
        assert f"{node}: " in cond["message"] and "needs 65536 MiB" in cond["message"]
    assert cluster.api("DELETE", "/api/v1/vms/huge").status_code == 200


def test_pvcnoded_rejects_a_bad_config_with_exit_2(tmp_path: Path) -> None:
    import subprocess
    import sys

    config = tmp_path / "bad.yaml"
    config.write_text("node: Not_A_Label\n")
    pvcnoded = str(Path(sys.executable).parent / "pvcnoded")
    result = subprocess.run([pvcnoded, "--config", str(config)], capture_output=True, text=True)
    assert result.returncode == 2
    assert "node" in result.stderr and "Traceback" not in result.stderr
