"""Fences as a state machine in ZooKeeper, carried on by whichever primary reads the record;
a node that heartbeats is never fenced because of a missing lease alone."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from controllers.fence_records import FenceRecords, FenceStep
from localcluster.zookeeper import ZooKeeperServer
from schemas import DaemonState
from tests.chaos.harness import ChaosCluster
from tests.helpers import holds_for, wait_for
from zkstore import Holders, paths


@pytest.fixture
def cluster(zookeeper: ZooKeeperServer, tmp_path: Path) -> Iterator[ChaosCluster]:
    with ChaosCluster(zookeeper, tmp_path / "cluster", nodes=3) as running:
        yield running


def _other(cluster: ChaosCluster) -> str:
    primary = wait_for(cluster.primary, 30, "a primary")
    return next(n for n in sorted(cluster.slots) if n != primary)


def test_a_recorded_fence_is_carried_on(cluster: ChaosCluster) -> None:
    """A primary died right after confirming a power-off (record: fenced): the primary that
    reads the record releases the node's holders, recovers its VMs and powers it on. In
    maintenance mode, so that no fence of this primary's own does it."""
    maintenance = cluster.timings.cluster_object()
    maintenance["spec"]["maintenance"] = True
    cluster.apply(maintenance)
    node = _other(cluster)
    cluster.apply_vm("fr1", placement={"home": node})
    cluster.wait_running("fr1", 30, node=node)
    assert cluster.kill(node)
    cluster.world.power_off(node)  # what the last primary did before it died
    records = FenceRecords(cluster.store)
    records.begin(node, epoch=0)
    assert records.advance(node, FenceStep.FENCED, epoch=0, after=FenceStep.FENCING)
    where = wait_for(
        lambda: (w := cluster.running_on("fr1")) not in (None, node) and w, 30, "fr1 recovered"
    )
    assert where != node
    assert node not in Holders(cluster.store).read("fr1")
    wait_for(lambda: cluster.world.powered(node), 20, f"{node} powered on again")
    # Once the node runs again the record goes.
    record = cluster.store.path(paths.fence_record(node))
    wait_for(lambda: cluster.store.client.exists(record) is None, 40, "the record to go")
    assert cluster.failures() == []


def test_a_missing_lease_alone_is_not_death(cluster: ChaosCluster) -> None:
    node = _other(cluster)
    cluster.apply_vm("fr2", placement={"home": node})
    cluster.wait_running("fr2", 30, node=node)
    cluster.store.client.delete(cluster.store.path(paths.node_lease(node)))
    window = cluster.timings.fence_after + 2 * cluster.timings.keepalive_interval
    holds_for(
        lambda: (
            cluster.node_status(node).daemon_state == DaemonState.RUN
            and cluster.running_on("fr2") == node
        ),
        window,
        f"{node} heartbeating without its lease is neither dead nor fenced",
    )
    assert cluster.world.powered(node)
    assert cluster.failures() == []


def test_a_node_powered_on_before_recovery_is_fenced_again(
    zookeeper: ZooKeeperServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The primary dies right after recording a confirmed power-off, and someone powers the
    node on before the next primary carries the fence on: the node may run its VMs, so its
    holders stay and its fence is reopened: nothing starts elsewhere (found in review)."""
    with ChaosCluster(zookeeper, tmp_path / "c", nodes=3, coordinators=2) as c:
        victim = "n3"  # not a coordinator: it never becomes primary itself
        c.apply_vm("fr3", placement={"home": victim})
        c.wait_running("fr3", 30, node=victim)
        primary = c.primary()
        assert primary in ("n1", "n2")
        fired = threading.Event()
        real_advance = FenceRecords.advance

        def advance(self: FenceRecords, node: str, step: FenceStep, epoch: int, **kw: Any) -> bool:
            done = real_advance(self, node, step, epoch, **kw)
            if node == victim and step == FenceStep.FENCED and not fired.is_set():
                fired.set()
                c.kill(primary)  # the primary crashes right after recording the power-off...
                c.world.power_on(victim)  # ...and an admin powers the node on
                raise RuntimeError("the primary crashed")
            return done

        monkeypatch.setattr(FenceRecords, "advance", advance)
        c.kill(victim)
        wait_for(fired.is_set, 40, "the fence to be confirmed")
        # The node is back and its fence is reopened, then dropped once it runs again: the
        # VM runs on exactly one node (the victim, where it is still placed), never two.
        wait_for(lambda: c.primary() not in (None, primary), 60, "the next primary")
        record = c.store.path(paths.fence_record(victim))
        wait_for(lambda: c.store.client.exists(record) is None, 60, "the fence to be settled")
        wait_for(lambda: c.failures() or c.running_on("fr3"), 60, "fr3 running on one node")
        assert c.wait_converged(30)[0]
        assert c.failures() == [], "\n".join([*c.failures(), *c.calls.tail(60)])
