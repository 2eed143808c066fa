"""The local cluster started again after `local down` (what `make demo` does on a machine
where it ran before): its VMs come back as new ones and run, their pool disks made anew."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from kazoo.client import KazooClient
from kazoo.exceptions import NoAuthError

from tests.helpers import wait_for
from tests.localcluster_fixture import RunningCluster, start_cluster


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[RunningCluster]:
    yield from start_cluster(tmp_path / "again", nodes=1)


def web(cluster: RunningCluster) -> None:
    cluster.apply(
        {
            "apiVersion": "pvc/v1",
            "kind": "VirtualMachine",
            "metadata": {"name": "web2"},
            "spec": {
                "memory": "256Mi",
                "disks": [{"name": "data", "pool": "shared", "size": "64Mi"}],
            },
        }
    )
    wait_for(
        lambda: (
            (cluster.api("GET", "/api/v1/vms/web2").json().get("status") or {}).get("phase")
            == "Running"
        ),
        60,
        "web2 Running",
    )


def test_a_cluster_started_again_after_down_runs_the_same_manifests(
    cluster: RunningCluster,
) -> None:
    web(cluster)
    assert list(cluster.cluster.shared_pool_dir().iterdir())
    cluster.cluster.down()
    # Its records are gone with its ZooKeeper data; so are the volumes they owned.
    assert not list(cluster.cluster.shared_pool_dir().iterdir())
    state, reused = cluster.cluster.up(timeout=90)
    assert not reused
    again = RunningCluster(cluster.cluster, state)
    web(again)
    assert_acls_on(again)


def assert_acls_on(cluster: RunningCluster) -> None:
    """As in production, the store is secured: ZooKeeper serves an anonymous client nothing
    under the root, the admin identity (new passwords on each start) everything."""
    anonymous = KazooClient(hosts=cluster.state.zookeeper_hosts, timeout=10)
    anonymous.start(timeout=15)
    admin = cluster.zk_client()
    try:
        with pytest.raises(NoAuthError):
            anonymous.get_children(cluster.state.root)
        with pytest.raises(NoAuthError):
            anonymous.get(f"{cluster.state.root}/resources/vms/web2")
        assert "web2" in admin.get_children(f"{cluster.state.root}/resources/vms")
    finally:
        for client in (anonymous, admin):
            client.stop()
            client.close()
