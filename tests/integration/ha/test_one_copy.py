"""At most one copy of a VM, under the interleavings that ran two (issue 10, sequences 1-6).

Each test drives the real daemons over a real ZooKeeper (tests/chaos/harness.py) with the
fault-injecting hypervisor: starts take 0.6 s, destroys 1.5 s, an ACPI shutdown 1 s, and a
guest told to ignore ACPI stays up until shutdownTimeout. The invariant is the world's own
record of what every host holds, checked at every transition: ``cluster.failures()``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from hypervisor import DomainState
from localcluster.zookeeper import ZooKeeperServer
from tests.chaos.harness import ChaosCluster
from tests.helpers import wait_for


@pytest.fixture
def cluster(zookeeper: ZooKeeperServer, tmp_path: Path) -> Iterator[ChaosCluster]:
    with ChaosCluster(zookeeper, tmp_path / "cluster", nodes=4, coordinators=3) as running:
        yield running


def _others(cluster: ChaosCluster, *besides: str) -> list[str]:
    return [n for n in sorted(cluster.slots) if n not in besides]


def _no_violation(cluster: ChaosCluster) -> None:
    failures = cluster.failures()
    assert failures == [], "\n".join([*failures, *cluster.calls.tail(80)])


def test_1_a_migrate_landing_during_the_sources_start(cluster: ChaosCluster) -> None:
    """The source is still inside its 0.6 s start when the migrate lands: the target must
    wait for it (a heartbeat taken before the domain runs does not list it)."""
    source, target = "n1", "n2"
    landed = threading.Event()

    def migrate_now(_node: str, _op: str, _vm: str | None) -> None:
        assert cluster.verb("vms", "v1", "migrate", node=target) == 200
        landed.set()

    cluster.hooks.before("start", migrate_now, node=source, vm="v1")
    cluster.apply_vm("v1", placement={"home": source})
    wait_for(landed.is_set, 30, "the migrate to land during the source's start")
    assert cluster.wait_running("v1", 30, node=target) == target
    _no_violation(cluster)


def test_2_stop_flush_start_while_the_guest_shuts_down(cluster: ChaosCluster) -> None:
    """`vm stop` -> `node flush` -> `vm start` while the guest ignores ACPI: the new node
    waits until the old one forced it off at shutdownTimeout."""
    cluster.apply_vm("v2", ignore_acpi=True, shutdown_timeout="4s", placement={"home": "n1"})
    cluster.wait_running("v2", 30, node="n1")
    assert cluster.verb("vms", "v2", "stop") == 200
    assert cluster.verb("nodes", "n1", "flush") == 200
    assert cluster.verb("vms", "v2", "start") == 200
    # Still held by n1 (shutting down, ignoring ACPI) while the VM is placed elsewhere.
    wait_for(lambda: cluster.placement_of("v2") not in (None, "n1"), 30, "v2 placed elsewhere")
    assert "n1" in cluster.world.holders("v2")
    wait_for(lambda: cluster.running_on("v2") not in (None, "n1"), 30, "v2 running elsewhere")
    _no_violation(cluster)


def test_3_move_then_the_target_dies_before_the_source_let_go(cluster: ChaosCluster) -> None:
    """C -> A (a move), and A dies before the VM left C: after A is fenced, recovery places
    the VM on B (C is flushed, so not a candidate), which must wait for C too, not only A."""
    primary = cluster.primary()
    c, a = _others(cluster, primary or "")[:2]
    cluster.apply_vm("v3", ignore_acpi=True, shutdown_timeout="20s", placement={"home": c})
    cluster.wait_running("v3", 30, node=c)
    assert cluster.verb("vms", "v3", "move", node=a) == 200
    wait_for(lambda: _waiting(cluster, "v3"), 10, "A to wait for C")
    assert cluster.kill(a)
    assert cluster.verb("nodes", c, "flush") == 200
    # Fenced, then recovered to a third node, which finds C still holding it.
    wait_for(
        lambda: cluster.placement_of("v3") not in (a, c, None), 60, "v3 recovered from the dead A"
    )
    assert c in cluster.world.holders("v3")
    wait_for(lambda: cluster.running_on("v3") not in (None, a, c), 60, "v3 running on B")
    _no_violation(cluster)


def test_4_two_moves_in_a_row_before_the_first_source_let_go(cluster: ChaosCluster) -> None:
    """C -> A -> D before C's guest is off: D waits for C."""
    c, a, d = "n1", "n2", "n3"
    cluster.apply_vm("v4", ignore_acpi=True, shutdown_timeout="5s", placement={"home": c})
    cluster.wait_running("v4", 30, node=c)
    assert cluster.verb("vms", "v4", "migrate", node=a) == 200
    wait_for(lambda: a in cluster.world.holders("v4") or _waiting(cluster, "v4"), 10, "A waits")
    assert cluster.verb("vms", "v4", "migrate", node=d) == 200
    wait_for(lambda: _waiting(cluster, "v4"), 10, "D to wait for C")
    assert c in cluster.world.holders("v4")
    assert cluster.wait_running("v4", 40, node=d) == d
    _no_violation(cluster)


def _waiting(cluster: ChaosCluster, vm: str) -> bool:
    return cluster.vm_status(vm).reason == "WaitingForSource"


def test_5_a_node_in_use_is_not_deleted(cluster: ChaosCluster) -> None:
    """Deleting the live Node a VM runs on is refused (409, saying what to do), so "no
    Node" is never read as "nothing runs there"; the migrate that follows waits as usual."""
    cluster.apply_vm("v5", ignore_acpi=True, shutdown_timeout="3s", placement={"home": "n1"})
    cluster.wait_running("v5", 30, node="n1")
    response = cluster.api("DELETE", "/api/v1/nodes/n1")
    assert response.status_code == 409, response.text
    message = response.json()["message"]
    assert "daemon is running" in message and "v5" in message
    assert cluster.verb("vms", "v5", "migrate", node="n2") == 200
    assert cluster.wait_running("v5", 40, node="n2") == "n2"
    _no_violation(cluster)


def test_6_a_paused_domain_on_the_source(cluster: ChaosCluster) -> None:
    """A paused domain is held: the target waits until the source destroyed it, even when
    the source is resumed meanwhile."""
    cluster.apply_vm("v6", shutdown_timeout="3s", placement={"home": "n1"})
    cluster.wait_running("v6", 30, node="n1")
    cluster.world.pause("n1", "v6")
    assert cluster.verb("vms", "v6", "migrate", node="n2") == 200
    wait_for(lambda: _waiting(cluster, "v6"), 10, "n2 to wait for the paused source")
    cluster.world.resume("n1", "v6")
    assert cluster.wait_running("v6", 40, node="n2") == "n2"
    _no_violation(cluster)


def test_a_move_away_and_back_keeps_the_guest_running(cluster: ChaosCluster) -> None:
    """Away and back before shutdownTimeout: the pending shutdown is cancelled, the guest
    never stops, and no failure is counted."""
    cluster.apply_vm("v7", ignore_acpi=True, shutdown_timeout="30s", placement={"home": "n1"})
    cluster.wait_running("v7", 30, node="n1")
    assert cluster.verb("vms", "v7", "migrate", node="n2") == 200
    wait_for(lambda: _waiting(cluster, "v7"), 10, "n2 to wait for n1")
    assert cluster.verb("vms", "v7", "unmigrate") == 200
    wait_for(lambda: cluster.world.holders("v7") == {"n1"}, 20, "n2 to let go")
    wait_for(lambda: cluster.vm_status("v7").phase == "Running", 10, "v7 Running again")
    assert cluster.world.domain_state("n1", "v7") == DomainState.RUNNING
    assert cluster.vm_status("v7").failures == 0
    stops = [line for line in cluster.calls.tail(400) if "v7" in line and "destroy" in line]
    assert stops == [], stops
    _no_violation(cluster)


def test_a_restarted_source_shuts_the_moved_guest_down_gracefully(cluster: ChaosCluster) -> None:
    """The VM is moved away while its node's daemon restarts: the new daemon has no cached
    spec, and still shuts the guest down (ACPI) rather than destroying it (found in review)."""
    source, target = "n2", "n3"
    cluster.apply_vm("v8", shutdown_timeout="20s", placement={"home": source})
    cluster.wait_running("v8", 30, node=source)
    daemon = cluster.current(source)
    assert daemon is not None and daemon.daemon is not None
    daemon.daemon.stopped.set()  # an orderly restart (systemctl restart pvcnoded)
    wait_for(lambda: daemon.ended, 30, "the daemon to stop")
    assert cluster.verb("vms", "v8", "migrate", node=target) == 200
    cluster.boot(source)  # the daemon starts again
    assert cluster.wait_running("v8", 40, node=target) == target
    states = [t.state for t in cluster.world.transitions if t.node == source and t.vm == "v8"]
    assert "shutting-down" in states, states
    _no_violation(cluster)
