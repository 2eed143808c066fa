"""A primary acts only in the epoch it wrote: an epoch moved under it ends its term at once."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from localcluster.zookeeper import ZooKeeperServer
from schemas import RouterState
from tests.chaos.harness import ChaosCluster
from tests.helpers import wait_for


@pytest.fixture
def cluster(zookeeper: ZooKeeperServer, tmp_path: Path) -> Iterator[ChaosCluster]:
    with ChaosCluster(zookeeper, tmp_path / "cluster", nodes=3) as running:
        yield running


def _acting(cluster: ChaosCluster) -> list[tuple[str, int | None]]:
    return [
        (inc.node, inc.daemon.election.epoch)
        for inc in cluster.incarnations()
        if inc.alive
        and inc.daemon is not None
        and inc.daemon.election is not None
        and inc.daemon.election.state == RouterState.PRIMARY
    ]


def test_a_primary_steps_down_on_an_epoch_it_did_not_write(cluster: ChaosCluster) -> None:
    old = wait_for(lambda: _acting(cluster), 30, "a primary")[0]
    # What a primary paused past its session finds when it comes back: a newer epoch.
    intruder = cluster.store.bump_epoch("intruder")
    assert intruder > (old[1] or 0)
    wait_for(lambda: old not in _acting(cluster), 5, f"{old} to step down")
    new = wait_for(
        lambda: [a for a in _acting(cluster) if (a[1] or 0) > intruder], 30, "a new term"
    )
    assert len(new) == 1
    assert cluster.failures() == []


def test_an_epoch_is_bumped_only_while_the_lock_node_exists(cluster: ChaosCluster) -> None:
    from zkstore import EpochMoved

    before = cluster.store.read_epoch(sync=True)
    with pytest.raises(EpochMoved, match="no longer holds its election lock"):
        cluster.store.bump_epoch(
            "ghost", expected=before, lock_path=cluster.store.path("/leases/primary/gone")
        )
    assert cluster.store.read_epoch(sync=True) == before
