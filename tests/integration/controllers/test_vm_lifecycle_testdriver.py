"""VM lifecycle verbs carried out by a real pvcnoded on the libvirt test driver."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from schemas import verbs
from tests.helpers import wait_for
from tests.localcluster_fixture import RunningCluster, start_cluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCluster]:
    yield from start_cluster(tmp_path_factory.mktemp("lifecycle"), nodes=1)


def apply_vm(
    cluster: RunningCluster, name: str, annotations: dict[str, str] | None = None, **spec: Any
) -> None:
    body = {
        "apiVersion": "pvc/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": name, "annotations": annotations or {}},
        "spec": {"memory": "64Mi", **spec},
    }
    response = cluster.api("POST", "/api/v1/apply", json=[body])
    assert response.status_code == 200, response.text


def status(cluster: RunningCluster, name: str) -> dict[str, Any]:
    return dict(cluster.api("GET", f"/api/v1/vms/{name}").json().get("status") or {})


def running_domains(cluster: RunningCluster) -> list[str]:
    return list(cluster.items("nodes")[0]["status"]["domains"])


def test_restart_annotation_restarts_once_per_value(cluster: RunningCluster) -> None:
    apply_vm(cluster, "rs")
    wait_for(lambda: status(cluster, "rs").get("phase") == "Running", 20, "rs Running")
    apply_vm(cluster, "rs", {verbs.RESTART: "2026-01-01T00:00:00Z"})
    wait_for(
        lambda: status(cluster, "rs").get("restartHandled") == "2026-01-01T00:00:00Z",
        20,
        "the restart to be carried out",
    )
    assert status(cluster, "rs")["phase"] == "Running"
    assert "rs" in wait_for(lambda: running_domains(cluster), 10, "domains reported")


def test_force_stop_with_halted_powers_off_at_once(cluster: RunningCluster) -> None:
    apply_vm(cluster, "fs", shutdownTimeout="10m")
    wait_for(lambda: "fs" in running_domains(cluster), 20, "fs running")
    apply_vm(cluster, "fs", {verbs.FORCE_STOP: "t1"}, shutdownTimeout="10m", runStrategy="Halted")
    wait_for(lambda: status(cluster, "fs").get("forceStopHandled") == "t1", 20, "force-stop done")
    assert status(cluster, "fs")["phase"] == "Stopped"
    wait_for(lambda: "fs" not in running_domains(cluster), 10, "fs gone from the node")


def apply_network(cluster: RunningCluster, name: str, vni: int) -> None:
    network = {
        "apiVersion": "pvc/v1",
        "kind": "Network",
        "metadata": {"name": name},
        "spec": {"type": "managed", "vni": vni},
    }
    assert cluster.api("POST", "/api/v1/apply", json=[network]).status_code == 200


def test_status_reports_uuid_macs_and_conditions(cluster: RunningCluster) -> None:
    apply_network(cluster, "lan", 100)
    apply_vm(
        cluster, "nic", nics=[{"network": "lan"}, {"network": "lan", "mac": "52:54:00:aa:bb:cc"}]
    )
    st = wait_for(
        lambda: (s := status(cluster, "nic")).get("phase") == "Running" and s, 20, "nic Running"
    )
    vm = cluster.api("GET", "/api/v1/vms/nic").json()
    assert st["domainUuid"] == vm["metadata"]["uid"]
    assert len(st["macs"]) == 2 and st["macs"][1] == "52:54:00:aa:bb:cc"
    assert st["macs"][0].startswith("52:54:00:")
    assert st["observedGeneration"] == vm["metadata"]["generation"]
    assert {c["type"]: c["status"] for c in st["conditions"]} == {
        "Scheduled": "True",
        "Ready": "True",
        "Converged": "True",
        "RestartRequired": "False",
    }


def test_a_vm_on_a_missing_network_is_pending_until_it_exists(cluster: RunningCluster) -> None:
    apply_vm(cluster, "lost", nics=[{"network": "nowhere"}])
    st = wait_for(
        lambda: (s := status(cluster, "lost")).get("reason") == "NetworkNotFound" and s,
        20,
        "a NetworkNotFound reason",
    )
    assert st["phase"] == "Pending" and st.get("node") is None
    message = next(c["message"] for c in st["conditions"] if c["type"] == "Ready")
    assert message == "network 'nowhere' does not exist"
    apply_network(cluster, "nowhere", 4000)
    wait_for(lambda: status(cluster, "lost").get("phase") == "Running", 30, "lost Running")
    # In use: the network cannot be deleted under the VM.
    response = cluster.api("DELETE", "/api/v1/networks/nowhere")
    assert response.status_code == 409 and "lost" in response.text, response.text
