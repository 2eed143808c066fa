"""Self-fence: a node cut off from ZooKeeper for selfFenceAfter destroys its domains."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from localcluster.process import signal_ours
from tests.helpers import wait_for
from tests.localcluster_fixture import RunningCluster, start_cluster


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[RunningCluster]:
    yield from start_cluster(tmp_path / "selffence", nodes=1, session_timeout="4s")


def test_a_node_cut_off_from_zookeeper_destroys_its_domains(cluster: RunningCluster) -> None:
    objects = [
        {
            "apiVersion": "pvc/v1",
            "kind": "Cluster",
            "metadata": {"name": "cluster"},
            "spec": {
                "fencing": {
                    "keepaliveInterval": "1s",
                    "fenceIntervals": 3,
                    "savingThrows": 3,
                    "selfFenceAfter": "2s",
                }
            },
        },
        {
            "apiVersion": "pvc/v1",
            "kind": "VirtualMachine",
            "metadata": {"name": "sf"},
            "spec": {"memory": "64Mi"},
        },
    ]
    assert cluster.api("POST", "/api/v1/apply", json=objects).status_code == 200
    wait_for(lambda: "sf" in cluster.items("nodes")[0]["status"]["domains"], 20, "sf running")
    log = cluster.cluster.dir / "node1.log"
    zookeeper = cluster.cluster.signal("zookeeper", signal.SIGSTOP)
    try:
        wait_for(
            lambda: "event=self_fence node=node1 destroyed=sf" in log.read_text(),
            30,
            "the node to destroy its domain while cut off",
        )
    finally:
        signal_ours(zookeeper, signal.SIGCONT, cluster.cluster.marker("zookeeper"))

    # Back in touch, and still placed here: it runs again, not counted as a guest failure.
    wait_for(
        lambda: "event=restart_after_self_fence vm=sf" in log.read_text(),
        40,
        "the node to start sf again once back in touch",
    )
    resumed = cluster.items("nodes")[0]["status"]["lastHeartbeat"]

    def running_again() -> bool:
        vm = cluster.api("GET", "/api/v1/vms/sf").json()
        node = cluster.items("nodes")[0]["status"]
        fresh = node["lastHeartbeat"] > resumed  # a report written after the restart
        return fresh and vm["status"]["phase"] == "Running" and "sf" in node["domains"]

    wait_for(running_again, 40, "sf reported running again after the outage")
    assert cluster.api("GET", "/api/v1/vms/sf").json()["status"]["failures"] == 0
