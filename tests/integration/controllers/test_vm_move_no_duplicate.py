"""Moving a running VM between nodes never runs it on both at once."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from localcluster.process import signal_ours
from tests.helpers import wait_for
from tests.localcluster_fixture import RunningCluster, start_cluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCluster]:
    yield from start_cluster(tmp_path_factory.mktemp("move"), nodes=2)


def test_a_placement_change_waits_for_the_source_to_stop(cluster: RunningCluster) -> None:
    vm = {
        "apiVersion": "pvc/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": "mv"},
        "spec": {"memory": "64Mi", "placement": {"home": "node1"}},
    }
    assert cluster.api("POST", "/api/v1/apply", json=[vm]).status_code == 200
    wait_for(
        lambda: "mv" in cluster.api("GET", "/api/v1/nodes/node1").json()["status"]["domains"],
        20,
        "mv on node1",
    )
    both: list[dict[str, list[str]]] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(0.02):
            domains = {
                n["metadata"]["name"]: n["status"]["domains"] for n in cluster.items("nodes")
            }
            if all("mv" in d for d in domains.values()):
                both.append(domains)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        response = cluster.api("POST", "/api/v1/vms/mv/migrate", json={"node": "node2"})
        assert response.status_code == 200, response.text
        wait_for(
            lambda: "mv" in cluster.api("GET", "/api/v1/nodes/node2").json()["status"]["domains"],
            20,
            "mv on node2",
        )
    finally:
        stop.set()
        watcher.join(5)
    assert both == []
    status = cluster.api("GET", "/api/v1/vms/mv").json()["status"]
    assert (status["node"], status["lastNode"], status["phase"]) == ("node2", "node1", "Running")


def test_the_target_waits_while_the_source_cannot_stop_it(cluster: RunningCluster) -> None:
    import signal

    vm = {
        "apiVersion": "pvc/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": "frozen"},
        "spec": {"memory": "64Mi", "placement": {"home": "node1"}},
    }
    assert cluster.api("POST", "/api/v1/apply", json=[vm]).status_code == 200
    wait_for(
        lambda: "frozen" in cluster.api("GET", "/api/v1/nodes/node1").json()["status"]["domains"],
        20,
        "frozen on node1",
    )
    # node1 still runs the domain but cannot act
    source = cluster.cluster.signal("node1", signal.SIGSTOP)
    try:
        response = cluster.api("POST", "/api/v1/vms/frozen/migrate", json={"node": "node2"})
        assert response.status_code == 200, response.text
        status = wait_for(
            lambda: (
                (s := cluster.api("GET", "/api/v1/vms/frozen").json()["status"]).get("reason")
                == "WaitingForSource"
                and s
            ),
            20,
            "node2 to wait for node1",
        )
        assert status["phase"] == "Migrating"
        assert "frozen" not in cluster.api("GET", "/api/v1/nodes/node2").json()["status"]["domains"]
    finally:
        signal_ours(source, signal.SIGCONT, cluster.cluster.marker("node1"))
    wait_for(
        lambda: cluster.api("GET", "/api/v1/vms/frozen").json()["status"].get("phase") == "Running",
        20,
        "frozen Running on node2 once node1 let go",
    )
    assert cluster.api("GET", "/api/v1/vms/frozen").json()["status"]["node"] == "node2"
