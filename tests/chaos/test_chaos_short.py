"""The short chaos budget `make test` runs: a few seeded trials (two fixed seeds and one
random one, named in the test id) of 6 steps on 3 nodes, 10-30 s each, and one fixed seed
against a 3-member ZooKeeper ensemble, which loses its leader mid-trial. Each asserts no
violated invariant and convergence; a failure prints the trial's report and the command
that replays it (`make chaos TRIALS=N` runs the long budget)."""

from __future__ import annotations

import os
import random
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from hypervisor import DomainSpec
from localcluster.zookeeper import ZooKeeperServer, start_ensemble
from schemas import RouterState
from tests.chaos.harness import ChaosCluster
from tests.chaos.trials import make_plan, run_trial

# One seed for the whole run: pytest-xdist's workers each collect the tests, and must
# collect the same ones, so they derive it from the run's id.
_RUN = os.environ.get("PYTEST_XDIST_TESTRUNUID")
RANDOM_SEED = (
    random.Random(_RUN).randrange(1, 10**6) if _RUN else random.SystemRandom().randrange(1, 10**6)
)
SEEDS = [
    # 3 coordinators: the holder of v2 crashes, then v2 is migrated, stopped, deleted.
    pytest.param(14, id="seed-14"),
    # 2 coordinators + 1: v3's holder is cut off from ZooKeeper while v3 is migrated.
    pytest.param(29, id="seed-29"),
    pytest.param(RANDOM_SEED, id=f"random-seed-{RANDOM_SEED}"),
]


@pytest.mark.parametrize("seed", SEEDS)
def test_chaos_trial(seed: int, zookeeper: ZooKeeperServer, tmp_path: Path) -> None:
    result = run_trial(seed, steps=6, nodes=3, zookeeper=zookeeper, workdir=tmp_path / "trial")
    print(result.report())
    assert result.ok, result.report()
    assert result.converge_seconds is not None


@pytest.fixture(scope="module")
def ensemble(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[ZooKeeperServer]]:
    members = start_ensemble(tmp_path_factory.mktemp("ensemble"), 3)
    yield members
    for member in members:
        member.stop()


# 3 coordinators: v1's holder crashes; then the ensemble's leader is killed, v2 is migrated
# while a new leader is elected (HTTP 503), and the leader comes back 3.6 s later.
ENSEMBLE_SEED = 10


def test_chaos_trial_zookeeper_member_loss(ensemble: list[ZooKeeperServer], tmp_path: Path) -> None:
    plan = make_plan(ENSEMBLE_SEED, 6, 3, zk_members=3)
    assert any(step.action == "zk_member_loss" for step in plan.steps)
    result = run_trial(
        ENSEMBLE_SEED, steps=6, nodes=3, zookeeper=ensemble, workdir=tmp_path / "trial"
    )
    print(result.report())
    assert result.ok, result.report()
    assert result.converge_seconds is not None
    assert any("killed zk member" in line for line in result.log), result.log
    assert any("serving again" in line for line in result.log), result.log


def test_monitor_sees_two_holders_and_two_primaries(
    zookeeper: ZooKeeperServer, tmp_path: Path
) -> None:
    """The proof machinery itself: a second copy started behind the daemons' back, and a
    daemon made to claim the primary's epoch, are both reported."""
    with ChaosCluster(zookeeper, tmp_path, nodes=3) as cluster:
        cluster.apply_vm("v1")
        source = cluster.wait_running("v1")
        other = next(n for n in sorted(cluster.slots) if n != source)
        # No owner tag: the daemon on `other` does not take it for one of its VMs.
        rogue = cluster.world.driver(other, cluster.slots[other].uri)
        rogue.define(DomainSpec(name="v1", uuid=str(uuid.uuid4()), vcpus=1, memory_mib=64))
        rogue.start("v1")
        failures = cluster.failures()
        assert any(f.startswith("ONE-COPY: v1") for f in failures), failures
        rogue.destroy("v1")
        rogue.undefine("v1")
        rogue.close()

        primary = cluster.primary()
        assert primary is not None
        epoch = cluster.daemon(primary).election.epoch  # type: ignore[union-attr]
        pretender = next(n for n in sorted(cluster.slots) if n != primary)
        election = cluster.daemon(pretender).election
        assert election is not None
        election.state, election.epoch = RouterState.PRIMARY, epoch
        try:
            failures = cluster.failures()
        finally:
            election.state = RouterState.SECONDARY
        assert any(f.startswith("TWO PRIMARIES") for f in failures), failures
