"""Adversarial review of live migration (2abcef2, 97bc3d5): interleavings that break it.

Each test is one finding (each fixed now, and kept so it stays fixed). Real
daemons over a real ZooKeeper (tests/chaos/harness.py) with the fault-injecting hypervisor
live-migrating between its hosts; the invariant is what the world's hosts held, checked at
every transition. Hooks on the driver calls (``cluster.hooks``) stand in for a busy node: a
reconcile that looks a little later than the one it races with.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hypervisor import DomainState
from hypervisor.faulty import HypervisorWorld, Timings
from localcluster.zookeeper import ZooKeeperServer
from schemas import DaemonState, MigrationState, VMPhase
from tests.chaos.harness import ChaosCluster
from tests.helpers import wait_for

SOURCE, TARGET, THIRD = "n4", "n2", "n3"
"""n4 is never primary (n1-n3 are the coordinators)."""


@pytest.fixture(scope="module")
def cluster(
    zookeeper: ZooKeeperServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ChaosCluster]:
    world = HypervisorWorld(Timings(start=0.6, shutdown=1.0, destroy=1.5, migrate=1.0))
    workdir = Path(tmp_path_factory.mktemp("live-migration-review"))
    with ChaosCluster(
        zookeeper, workdir, nodes=4, coordinators=3, world=world, live_migration=True
    ) as running:
        yield running


@pytest.fixture
def c(cluster: ChaosCluster) -> Iterator[ChaosCluster]:
    """Every node ready to live-migrate; afterwards hooks cleared, faults healed, the test's
    VMs deleted and gone from every host."""

    def ready(node: str) -> bool:
        status = cluster.node_status(node)
        return status.daemon_state == DaemonState.RUN and status.migration_uri is not None

    wait_for(lambda: all(ready(n) for n in cluster.slots), 60, "every node ready")
    before = set(cluster.expected_vms)
    yield cluster
    cluster.hooks.clear()
    cluster.heal_all()
    for vm in sorted(cluster.expected_vms - before):
        cluster.delete_vm(vm)
    wait_for(lambda: not any(cluster.world.holders(vm) for vm in cluster.known_vms), 60, "VMs gone")


def _violations(c: ChaosCluster) -> list[str]:
    return [v.detail for v in c.world.violations] + c.failures()


def _migrate(c: ChaosCluster, vm: str, node: str, *, live: bool = False) -> None:
    body = {"node": node, **({"live": True} if live else {})}
    response = c.api("POST", f"/api/v1/vms/{vm}/migrate", json=body)
    assert response.status_code == 200, response.text


def _incoming(c: ChaosCluster, vm: str, target: str) -> None:
    wait_for(
        lambda: c.world.domain_state(target, vm) == DomainState.PAUSED,
        20,
        f"{vm}'s incoming copy on {target}",
    )


def _stops(c: ChaosCluster, vm: str, node: str, since: float) -> list[str]:
    """What ``vm`` went through on ``node`` that is no part of a live migration."""
    ours = ("off:migrated", "undefined", "migrating-out:", "migration-failed", "running")
    return [
        t.state
        for t in c.world.transitions
        if t.vm == vm and t.node == node and t.t >= since and not t.state.startswith(ours)
    ]


def test_migrate_to_a_third_node_mid_migration(c: ChaosCluster) -> None:
    """n4 -> n2 under way, then `vm migrate n3`: the VM must end up on n3."""
    vm = "r1"
    c.apply_vm(vm, placement={"home": SOURCE})
    c.wait_running(vm, 30, node=SOURCE)
    c.world.slow_migrations(vm, 6.0)
    _migrate(c, vm, TARGET)
    _incoming(c, vm, TARGET)
    c.world.slow_migrations(vm, None)
    _migrate(c, vm, THIRD)
    assert c.wait_running(vm, 30, node=THIRD) == THIRD
    assert _violations(c) == []


def test_live_retry_to_the_same_node_after_a_failure(c: ChaosCluster) -> None:
    """`vm migrate --live n2` fails for good (the VM is placed back on n4); the user tries
    again once n2 can take it: the retry must not be undone by the last failure's status."""
    vm = "r2"
    c.apply_vm(vm, placement={"home": SOURCE})
    c.wait_running(vm, 30, node=SOURCE)
    c.world.fail_migrations(vm, "injected", 3)
    _migrate(c, vm, TARGET, live=True)
    wait_for(
        lambda: (
            (m := c.vm_status(vm).migration) is not None
            and m.state == MigrationState.FAILED
            and c.placement_of(vm) == SOURCE
        ),
        40,
        "the failed live migration placed back on the source",
    )
    wait_for(
        lambda: (
            (s := c.vm_status(vm)).phase == VMPhase.RUNNING
            and s.node == SOURCE
            and s.migration is not None
            and s.migration.state == MigrationState.FAILED
        ),
        15,
        "the source to report it Running with the failure still told",
    )
    # Both nodes take a moment to look (busy nodes): the primary's MigrationController looks
    # first, at the status the failure left (the source's next write, or the target's
    # WaitingForSource, would have replaced it).
    c.hooks.before("info", lambda *_: time.sleep(2.0), node=SOURCE, vm=vm)
    c.hooks.before("state", lambda *_: time.sleep(2.0), node=TARGET, vm=vm)
    _migrate(c, vm, TARGET, live=True)
    assert c.wait_running(vm, 20, node=TARGET) == TARGET
    assert _violations(c) == []


def test_a_restarted_source_lets_the_running_migration_finish(c: ChaosCluster) -> None:
    """pvcnoded on the source restarts while libvirt migrates the guest (the job survives
    the daemon): the migration must complete, the guest never stopped."""
    vm = "r3"
    c.apply_vm(vm, shutdown_timeout="2s", placement={"home": SOURCE})
    c.wait_running(vm, 30, node=SOURCE)
    c.world.slow_migrations(vm, 20.0)
    since = time.monotonic()
    _migrate(c, vm, TARGET)
    _incoming(c, vm, TARGET)
    inc = c.current(SOURCE)
    assert inc is not None and inc.daemon is not None
    inc.daemon.stopped.set()  # systemctl restart pvcnoded; libvirtd carries on
    wait_for(lambda: inc.ended, 30, "the source's daemon to stop")
    c.boot(SOURCE)
    assert c.wait_running(vm, 40, node=TARGET) == TARGET
    assert _stops(c, vm, SOURCE, since) == []
    assert _violations(c) == []
