"""The short chaos budget `make test` runs: a few seeded trials (two fixed seeds and one
random one, named in the test id) of 6 steps on 3 nodes, 10-30 s each. Each asserts no
violated invariant and convergence; a failure prints the trial's report and the command
that replays it (`make chaos TRIALS=N` runs the long budget)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from cli.localcluster.zookeeper import ZooKeeperServer
from tests.chaos.trials import run_trial

RANDOM_SEED = random.SystemRandom().randrange(1, 10**6)
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
