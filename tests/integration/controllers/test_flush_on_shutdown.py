"""pvcnoded with ``flushOnShutdown``: stopped in order (SIGTERM, as systemd stops it), it
flushes its node first, keeping its keepalive until its last step, so its VMs run on
elsewhere and nobody fences it; started again, it unflushes the node it flushed."""

from __future__ import annotations

import signal
from collections.abc import Iterator

import pytest

from tests.helpers import wait_for
from tests.localcluster_fixture import RunningCluster, start_cluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCluster]:
    yield from start_cluster(
        tmp_path_factory.mktemp("flush-on-shutdown"),
        node_config={"node3": {"flushOnShutdown": True, "flushTimeout": "60s"}},
    )


def where(cluster: RunningCluster) -> dict[str, tuple[str | None, str | None]]:
    return {
        v["metadata"]["name"]: ((v.get("status") or {}).get("node"), v["status"].get("phase"))
        for v in cluster.items("vms")
        if v.get("status")
    }


def test_an_orderly_stop_flushes_the_node_and_a_restart_unflushes_it(
    cluster: RunningCluster,
) -> None:
    names = ["fos-a", "fos-b"]
    cluster.apply(
        *(
            {
                "apiVersion": "pvc/v1",
                "kind": "VirtualMachine",
                "metadata": {"name": name},
                "spec": {"memory": "64Mi", "placement": {"home": "node3"}},
            }
            for name in names
        )
    )
    wait_for(
        lambda: all(where(cluster).get(n) == ("node3", "Running") for n in names),
        30,
        "both VMs Running on node3",
    )
    cluster.cluster.kill_node("node3", signal.SIGTERM, timeout=60)
    # Both ran elsewhere before the daemon exited (its flush waited for that).
    now = where(cluster)
    assert all(now[n][0] in ("node1", "node2") and now[n][1] == "Running" for n in names), now
    node3 = cluster.api("GET", "/api/v1/nodes/node3").json()
    assert node3["spec"]["drain"] is True
    assert node3["status"]["domainState"] == "flushed"
    assert node3["status"]["daemonState"] == "stop"
    events = cluster.api("GET", "/api/v1/events").json()["items"]
    reasons = {e["reason"] for e in events if e["involvedObject"]["name"] == "node3"}
    assert not reasons & {"Fenced", "FenceStarted", "NodeDead"}, reasons
    # Started again: it unflushes the node it flushed, and the VMs come back.
    cluster.cluster.start_node("node3")
    wait_for(
        lambda: all(where(cluster).get(n) == ("node3", "Running") for n in names),
        60,
        "both VMs back on node3 after the restart",
    )
    node3 = cluster.api("GET", "/api/v1/nodes/node3").json()
    assert node3["spec"]["drain"] is False
    assert "pvc.io/flushed-on-shutdown" not in node3["metadata"].get("annotations", {})
