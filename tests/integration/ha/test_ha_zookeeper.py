"""A 3-member ZooKeeper ensemble losing members under a running cluster."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.ha_manifests import cluster_object
from tests.helpers import wait_for
from tests.localcluster_fixture import RunningCluster, start_cluster


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[RunningCluster]:
    yield from start_cluster(tmp_path / "zk", nodes=3, zookeeper_members=3)


def apply(cluster: RunningCluster, *objects: dict[str, Any]) -> httpx.Response:
    return cluster.api("POST", "/api/v1/apply", json=list(objects))


def vm(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "pvc/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": name},
        "spec": {"memory": "64Mi"},
    }


def phases(cluster: RunningCluster) -> dict[str, tuple[str, str]]:
    return {
        v["metadata"]["name"]: (
            (v.get("status") or {}).get("phase", ""),
            (v.get("status") or {}).get("node", ""),
        )
        for v in cluster.items("vms")
    }


def fenced_nodes(cluster: RunningCluster) -> list[str]:
    return [
        n["metadata"]["name"]
        for n in cluster.items("nodes")
        if any(c["type"] == "Fenced" for c in (n.get("status") or {}).get("conditions", []))
    ]


def test_losing_one_member_changes_nothing(cluster: RunningCluster) -> None:
    assert apply(cluster, cluster_object(), vm("a")).status_code == 200
    wait_for(lambda: phases(cluster).get("a", ("",))[0] == "Running", 30, "a Running")
    cluster.cluster.zookeeper_member(1).stop()
    # The API's client may be failing over to another member for a moment (503 meanwhile).
    wait_for(
        lambda: (r := _try_apply(cluster, vm("b"))) is not None and r.status_code == 200,
        20,
        "an apply through the remaining quorum",
    )
    wait_for(lambda: phases(cluster).get("b", ("",))[0] == "Running", 30, "b Running")
    assert fenced_nodes(cluster) == []


def test_losing_quorum_stops_changes_and_the_cluster_recovers(cluster: RunningCluster) -> None:
    assert apply(cluster, cluster_object(), *[vm(f"q{i}") for i in range(3)]).status_code == 200
    wait_for(lambda: all(p == "Running" for p, _ in phases(cluster).values()), 30, "VMs Running")
    before = phases(cluster)
    members = [cluster.cluster.zookeeper_member(i) for i in (1, 2)]
    for member in members:
        member.stop()
    # Without a quorum nothing can be written; the API says so at once rather than queueing.
    wait_for(
        lambda: (r := _try_apply(cluster, vm("never"))) is not None and r.status_code == 503,
        20,
        "the API to refuse writes with 503",
    )
    # Longer than the fence window: nobody may be declared dead or fenced for the outage.
    time.sleep(8)  # the outage itself is what is under test
    for index, member in zip((1, 2), members, strict=True):
        member.start()
        assert member.pid is not None
        cluster.cluster.record_zookeeper_pid(index, member.pid)

    def all_ready() -> bool:
        try:
            nodes = cluster.items("nodes")
        except httpx.HTTPError:
            return False
        return all(
            any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in (n.get("status") or {}).get("conditions", [])
            )
            for n in nodes
        )

    wait_for(all_ready, 60, "every node Ready again")
    assert fenced_nodes(cluster) == []
    wait_for(lambda: phases(cluster) == before, 30, "every VM Running where it was")
    assert "never" not in phases(cluster)
    wait_for(
        lambda: (r := _try_apply(cluster, vm("after"))) is not None and r.status_code == 200,
        30,
        "writes again",
    )
    wait_for(lambda: phases(cluster).get("after", ("",))[0] == "Running", 30, "after Running")


def _try_apply(cluster: RunningCluster, obj: dict[str, Any]) -> httpx.Response | None:
    try:
        response = apply(cluster, obj)
    except httpx.HTTPError:
        return None
    return (
        response
        if response.status_code == 200
        else (response if response.status_code >= 500 else None)
    )
