"""A node that comes back within its saving throws reports its VMs Running again at once."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from localcluster.zookeeper import ZooKeeperServer
from schemas import DaemonState
from tests.chaos.harness import ChaosCluster
from tests.helpers import wait_for


@pytest.fixture
def cluster(zookeeper: ZooKeeperServer, tmp_path: Path) -> Iterator[ChaosCluster]:
    with ChaosCluster(zookeeper, tmp_path / "cluster", nodes=3) as running:
        yield running


def test_vms_are_running_again_within_one_interval(cluster: ChaosCluster) -> None:
    primary = wait_for(cluster.primary, 30, "a primary")
    node = next(n for n in sorted(cluster.slots) if n != primary)
    cluster.apply_vm("st1", placement={"home": node})
    cluster.wait_running("st1", 30, node=node)
    wait_for(lambda: cluster.vm_status("st1").phase == "Running", 10, "st1 Running")
    frozen = cluster.pause(node)
    assert frozen is not None
    try:
        # Dead after fenceIntervals silent intervals; fenced only after the saving throws.
        wait_for(lambda: cluster.vm_status("st1").phase == "Unknown", 20, "st1 Unknown (node dead)")
        assert cluster.node_status(node).daemon_state == DaemonState.DEAD
    finally:
        cluster.resume(frozen)
    back = time.monotonic()
    interval = cluster.timings.keepalive_interval
    wait_for(lambda: cluster.vm_status("st1").phase == "Running", 10, "st1 Running again")
    took = time.monotonic() - back
    assert took <= interval + 1.0, f"Running again after {took:.2f}s (interval {interval:g}s)"
    assert cluster.running_on("st1") == node  # never fenced, never moved
    assert cluster.failures() == []
