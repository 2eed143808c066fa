"""A VM's story, told by real pvcnoded processes (libvirt's test driver) through the API:
its Converged and RestartRequired conditions, and each node's daemonVersion."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from schemas.version import pvc_version
from tests.helpers import vm_manifest, wait_for
from tests.localcluster_fixture import RunningCluster, start_cluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCluster]:
    yield from start_cluster(tmp_path_factory.mktemp("story"), nodes=2)


def vm_object(cluster: RunningCluster, name: str) -> dict[str, Any]:
    response = cluster.api("GET", f"/api/v1/vms/{name}")
    assert response.status_code == 200, response.text
    return dict(response.json())


def condition(cluster: RunningCluster, name: str, kind: str) -> dict[str, Any]:
    """The VM's condition ``kind`` as stored now, or {} (with the generations it is for)."""
    vm = vm_object(cluster, name)
    status = vm.get("status") or {}
    if status.get("observedGeneration") != vm["metadata"]["generation"]:
        return {}
    return next((c for c in status.get("conditions", []) if c["type"] == kind), {})


def converged(cluster: RunningCluster, name: str) -> bool:
    return condition(cluster, name, "Converged").get("status") == "True"


def domains(cluster: RunningCluster) -> dict[str, list[str]]:
    return {n["metadata"]["name"]: n["status"]["domains"] for n in cluster.items("nodes")}


def test_every_node_reports_its_daemon_version(cluster: RunningCluster) -> None:
    nodes = wait_for(
        lambda: [n for n in cluster.items("nodes") if (n.get("status") or {}).get("daemonVersion")],
        20,
        "nodes reporting daemonVersion",
    )
    assert {n["status"]["daemonVersion"] for n in nodes} == {pvc_version()}
    assert pvc_version() not in ("", "unknown")


def test_converged_and_restart_required_follow_the_spec(cluster: RunningCluster) -> None:
    cluster.apply(vm_manifest("cv", home="node1"))
    wait_for(lambda: converged(cluster, "cv"), 30, "cv Converged")
    assert "cv" in domains(cluster)["node1"]
    assert condition(cluster, "cv", "RestartRequired")["status"] == "False"

    cluster.apply(vm_manifest("cv", home="node1", memory="128Mi", vcpus=2))
    pending = wait_for(
        lambda: (c := condition(cluster, "cv", "RestartRequired")).get("status") == "True" and c,
        20,
        "RestartRequired after a memory change",
    )
    assert pending["reason"] == "PendingChanges"
    assert pending["message"].startswith("memory, vcpus changed since it started")
    assert converged(cluster, "cv")  # it runs where placed; the change waits for a reboot

    assert cluster.pvcctl("vm", "restart", "cv").returncode == 0
    wait_for(
        lambda: condition(cluster, "cv", "RestartRequired").get("status") == "False",
        30,
        "RestartRequired cleared by the restart",
    )
    wait_for(lambda: converged(cluster, "cv"), 30, "cv Converged after the restart")


def test_halted_vm_is_converged_once_stopped(cluster: RunningCluster) -> None:
    # Never placed: the primary's record of it says converged.
    cluster.apply(vm_manifest("hv", home="node1", runStrategy="Halted"))
    wait_for(lambda: converged(cluster, "hv"), 20, "a new Halted VM Converged")
    assert all("hv" not in names for names in domains(cluster).values())

    # Running, then Halted: converged only once its domain is off.
    cluster.apply(vm_manifest("hv2", home="node2"))
    wait_for(lambda: converged(cluster, "hv2"), 30, "hv2 running")
    cluster.apply(vm_manifest("hv2", home="node2", runStrategy="Halted", shutdownTimeout="2s"))
    wait_for(lambda: converged(cluster, "hv2"), 30, "hv2 Converged as stopped")
    assert vm_object(cluster, "hv2")["status"]["phase"] == "Stopped"
    wait_for(lambda: "hv2" not in domains(cluster)["node2"], 10, "hv2 gone from node2's domains")
