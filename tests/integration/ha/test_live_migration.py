"""Live migration under faults: real daemons over a real ZooKeeper (tests/chaos/harness.py),
the fault-injecting hypervisor live-migrating between its hosts (hypervisor/faulty.py).

One cluster of 4 nodes (n1-n3 coordinators, n4 never primary) serves the whole module; each
test uses VMs of its own, which are deleted after it, and every fault is healed before the
next one. The invariant is the world's record of what every host held, checked at every
transition (``world.violations``); beside it, each test asserts what a user sees: where the
VM runs, its status, its events.

World timings: starts 0.6 s, ACPI shutdowns 1 s, destroys 1.5 s, live migrations 1.5 s
(``world.slow_migrations`` makes one VM's longer, so a fault lands mid-migration).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from controllers.metrics import MIGRATIONS
from hypervisor import DomainState
from hypervisor.faulty import HypervisorWorld, Timings
from localcluster.zookeeper import ZooKeeperServer
from schemas import DaemonState, MigrationState, VMPhase
from schemas import DomainState as NodeDomainState
from tests.chaos.harness import ChaosCluster
from tests.helpers import holds_for, wait_for
from zkstore import Holders

WORLD_TIMINGS = Timings(start=0.6, shutdown=1.0, destroy=1.5, migrate=1.5)
SLOW = 6.0
"""Seconds of a migration that a fault or a cancel lands in the middle of."""
FENCED = 60.0
"""Bound on a fence and the recovery after it (fence window ~6 s, reboot, registration)."""
LEFT_BY_MIGRATION = ("off:migrated", "undefined", "migrating-out:", "migration-failed")
"""What a source records of a live migration; anything else but running is a stop."""


@pytest.fixture(scope="module")
def cluster(
    zookeeper: ZooKeeperServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ChaosCluster]:
    workdir = tmp_path_factory.mktemp("live-migration")
    world = HypervisorWorld(WORLD_TIMINGS)
    with ChaosCluster(
        zookeeper, Path(workdir), nodes=4, coordinators=3, world=world, live_migration=True
    ) as running:
        yield running


@pytest.fixture
def c(cluster: ChaosCluster) -> Iterator[ChaosCluster]:
    """The shared cluster, every node ready and able to live-migrate; afterwards every fault
    healed, every node readied and the test's VMs deleted and gone from every host."""
    _wait_all_ready(cluster)
    before = set(cluster.expected_vms)
    yield cluster
    cluster.hooks.clear()
    cluster.heal_all()
    for node in cluster.slots:
        cluster.world.set_live_migration(node, None)
    cluster.ready_all()
    for vm in sorted(cluster.expected_vms - before):
        cluster.delete_vm(vm)
    wait_for(
        lambda: not any(cluster.world.holders(vm) for vm in cluster.known_vms),
        30,
        "every VM deleted off every host",
    )


def _wait_all_ready(c: ChaosCluster) -> None:
    def ready(node: str) -> bool:
        status = c.node_status(node)
        return (
            status.daemon_state == DaemonState.RUN
            and status.domain_state == NodeDomainState.READY
            and status.migration_uri is not None
            and any(x.type == "Ready" and x.status == "True" for x in status.conditions)
        )

    wait_for(lambda: c.primary() is not None, FENCED, "a primary")
    wait_for(lambda: all(ready(n) for n in c.slots), FENCED, "every node ready")
    # A status written before a power loss looks ready too: wait for a heartbeat from each.
    beats = {n: c.node_status(n).last_heartbeat for n in c.slots}
    wait_for(
        lambda: all(c.node_status(n).last_heartbeat != beats[n] and ready(n) for n in c.slots),
        FENCED,
        "a heartbeat from every node",
    )


# -- what the test looks at ----------------------------------------------------------------


def no_violation(c: ChaosCluster) -> None:
    assert c.world.violations == [], c.world.format_transitions(120)
    failures = c.failures()
    assert failures == [], "\n".join([*failures, *c.calls.tail(80)])


def states(c: ChaosCluster, vm: str, node: str | None = None, since: float = 0.0) -> list[str]:
    """The world's transitions of ``vm`` (on ``node``) since ``since`` (time.monotonic())."""
    return [
        t.state if node else f"{t.node} {t.state}"
        for t in c.world.transitions
        if t.vm == vm and t.t >= since and (node is None or t.node == node)
    ]


def stops(c: ChaosCluster, vm: str, node: str, since: float) -> list[str]:
    """Transitions of ``vm`` on ``node`` that are no part of a live migration: a shutdown,
    a destroy, a crash, a start."""
    return [s for s in states(c, vm, node, since) if not s.startswith(LEFT_BY_MIGRATION)]


def events(c: ChaosCluster, vm: str) -> list[tuple[str, str]]:
    """(reason, message) of the VM's events, as `pvcctl events` shows them."""
    response = c.api("GET", "/api/v1/events", params={"kind": "vm", "name": vm, "limit": 1000})
    assert response.status_code == 200, response.text
    return [(e["reason"], e["message"]) for e in response.json()["items"]]


def event(c: ChaosCluster, vm: str, reason: str, timeout: float = 10.0) -> str:
    """The message of the VM's first ``reason`` event (waiting for it)."""
    found = wait_for(
        lambda: [m for r, m in events(c, vm) if r == reason], timeout, f"a {reason} event of {vm}"
    )
    return str(found[0])


def migrate(c: ChaosCluster, vm: str, node: str, live: bool | None = None) -> Any:
    body: dict[str, Any] = {"node": node}
    if live is not None:
        body["live"] = live
    return c.api("POST", f"/api/v1/vms/{vm}/migrate", json=body)


def holders(c: ChaosCluster, vm: str) -> frozenset[str]:
    """The VM's holder set in ZooKeeper (/holders/<vm>)."""
    return Holders(c.store).read(vm)


def incoming(c: ChaosCluster, vm: str, target: str) -> None:
    """Wait until ``target`` holds the incoming copy of a migration under way."""
    wait_for(
        lambda: (
            c.world.domain_state(target, vm) == DomainState.PAUSED and len(c.world.holders(vm)) == 2
        ),
        20,
        f"{vm}'s migration to {target} under way",
    )


def non_primary(c: ChaosCluster, count: int) -> list[str]:
    primary = c.primary()
    return [n for n in sorted(c.slots) if n != primary][:count]


def apply_on(c: ChaosCluster, vm: str, node: str, **spec: Any) -> None:
    c.apply_vm(vm, placement={"home": node, **spec.pop("placement", {})}, **spec)
    c.wait_running(vm, 30, node=node)
    # The hypervisor runs it before the node's status says so; a live migrate asks for the
    # latter (409 "not running on ..." until then), as a user would wait for it.
    wait_for(partial(_runs_on, c, vm, node), 10, f"{vm} Running on {node} in its status")


def running_once(c: ChaosCluster, vm: str, timeout: float = FENCED) -> str:
    """Wait until ``vm`` runs on exactly one host, as placed, and that host alone holds it."""
    return str(
        wait_for(
            lambda: (
                (n := c.running_on(vm)) is not None
                and c.placement_of(vm) == n
                and holders(c, vm) == {n}
                and n
            ),
            timeout,
            f"{vm} running once, where it is placed",
        )
    )


def _held_by(c: ChaosCluster, vm: str, node: str) -> bool:
    return holders(c, vm) == {node}


def _runs_on(c: ChaosCluster, vm: str, node: str) -> bool:
    status = c.vm_status(vm)
    return status.node == node and status.phase == VMPhase.RUNNING


def _failed(c: ChaosCluster, vm: str) -> bool:
    migration = c.vm_status(vm).migration
    return migration is not None and migration.state == MigrationState.FAILED


def migrations(outcome: str) -> float:
    """pvc_migrations_total{kind="live"} of every daemon of this process (the harness runs
    them all here); read from the counter alone, so no scrape-time hypervisor read runs."""
    return next(
        (
            sample.value
            for family in MIGRATIONS.collect()
            for sample in family.samples
            if sample.name == "pvc_migrations_total"
            and sample.labels == {"kind": "live", "outcome": outcome}
        ),
        0.0,
    )


def node_state(c: ChaosCluster, node: str) -> NodeDomainState:
    return c.node_status(node).domain_state


# -- a-d: a migration, its failures, its fallback, its refusal ------------------------------


def test_a_live_migrate(c: ChaosCluster) -> None:
    source, target = "n1", "n2"
    apply_on(c, "la", source)
    since = time.monotonic()
    succeeded = migrations("succeeded")
    response = migrate(c, "la", target, live=True)
    assert response.status_code == 200, response.text
    c.wait_running("la", 30, node=target)
    wait_for(lambda: holders(c, "la") == {target}, 10, f"{source} to release its holder")
    wait_for(partial(_runs_on, c, "la", target), 10, "la Running on the target")
    status = c.vm_status("la")
    assert status.migration is None, status.migration
    assert status.last_node == source
    # Both held it during: the target's incoming copy beside the source's running one.
    seen = states(c, "la", since=since)
    begun = seen.index(f"{source} migrating-out:{target}")
    came = seen.index(f"{target} incoming:{source}")
    left = seen.index(f"{source} off:migrated")
    assert begun < came < left, seen
    assert stops(c, "la", source, since) == [], seen
    assert migrations("succeeded") == succeeded + 1  # counted on the source, once
    assert "running" in states(c, "la", target, since)
    no_violation(c)


def test_b_forced_live_that_fails_never_falls_back(c: ChaosCluster) -> None:
    source, target = "n2", "n3"
    why = "simulated: the guest dirties memory faster than the link"
    apply_on(c, "lb", source)
    c.world.fail_migrations("lb", why, count=10)
    since = time.monotonic()
    failed, given_up = migrations("failed"), migrations("given_up")
    answer = migrate(c, "lb", target, live=True)
    assert answer.status_code == 200, answer.text
    wait_for(partial(_failed, c, "lb"), 30, "lb's migration Failed")
    migration = c.vm_status("lb").migration
    assert migration is not None
    assert why in (migration.last_error or ""), migration
    assert migration.attempts == 3 and migration.target == target, migration
    assert "no shutdown move" in event(c, "lb", "MigrationFailed")
    wait_for(lambda: c.placement_of("lb") == source, 10, "lb placed back on its source")
    wait_for(lambda: holders(c, "lb") == {source}, 10, f"{target} to let go of lb")
    assert c.running_on("lb") == source
    # It ran on the source the whole time: three attempts, never a stop.
    assert states(c, "lb", source, since).count(f"migrating-out:{target}") == 3
    assert (migrations("failed"), migrations("given_up")) == (failed + 3, given_up + 1)
    assert stops(c, "lb", source, since) == [], states(c, "lb", since=since)
    assert "running" not in states(c, "lb", target, since)
    assert not [r for r, _ in events(c, "lb") if r == "MigrationFallback"]
    status = c.vm_status("lb")
    assert status.node == source and status.phase == VMPhase.RUNNING
    no_violation(c)


def test_c_auto_falls_back_to_a_shutdown_move(c: ChaosCluster) -> None:
    source, target = "n3", "n1"
    apply_on(c, "lc", source)
    c.world.fail_migrations("lc", "simulated: connection reset", count=10)
    since = time.monotonic()
    fell_back = migrations("fell_back")
    assert migrate(c, "lc", target).status_code == 200
    c.wait_running("lc", 40, node=target)
    assert "shutdown instead" in event(c, "lc", "MigrationFallback")
    assert migrations("fell_back") == fell_back + 1
    seen = states(c, "lc", source, since)
    assert seen.count(f"migrating-out:{target}") == 3, seen
    assert "shutting-down" in seen and seen.index("shutting-down") > seen.index(
        "migration-failed"
    ), seen
    # Cold: after the last failed attempt's incoming copy, a plain start on the target.
    on_target = states(c, "lc", target, since)
    last_failed = len(on_target) - 1 - on_target[::-1].index("off:migration-failed")
    cold = next(x for x in on_target[last_failed + 1 :] if x != "defined")
    assert cold == "starting", on_target
    assert "running" not in on_target[:last_failed], on_target
    no_violation(c)


def test_d_a_hypervisor_that_cannot_live_migrate(c: ChaosCluster) -> None:
    source, target = "n1", "n3"
    apply_on(c, "ld", source)
    c.world.set_live_migration(target, False)
    wait_for(
        lambda: c.node_status(target).live_migration_problem is not None,
        10,
        f"{target} to say it cannot live-migrate",
    )
    forced = migrate(c, "ld", target, live=True)
    assert forced.status_code == 409, forced.text
    assert "cannot be live-migrated" in forced.json()["message"]
    assert "cannot live-migrate" in forced.json()["message"]
    assert c.placement_of("ld") == source
    since = time.monotonic()
    assert migrate(c, "ld", target).status_code == 200
    c.wait_running("ld", 20, node=target)
    assert "before any attempt" in event(c, "ld", "MigrationFallback")
    seen = states(c, "ld", source, since)
    assert not [s for s in seen if s.startswith("migrating-out")], seen
    assert "shutting-down" in seen
    no_violation(c)


# -- e: cancel -----------------------------------------------------------------------------


def test_e_cancel_a_migration_in_flight(c: ChaosCluster) -> None:
    """Unmigrate (le1) and a migrate back to the source (le2) mid-migration: the source
    aborts, the guest never stops, the target ends holding nothing."""
    cases = {"le1": ("n1", "n2"), "le2": ("n2", "n3")}
    for vm, (source, _) in cases.items():
        apply_on(c, vm, source)
        c.world.slow_migrations(vm, SLOW)
    since = time.monotonic()
    for vm, (_, target) in cases.items():
        assert migrate(c, vm, target).status_code == 200
    for vm, (_, target) in cases.items():
        incoming(c, vm, target)
    assert c.verb("vms", "le1", "unmigrate") == 200
    assert migrate(c, "le2", cases["le2"][0]).status_code == 200
    for vm, (source, target) in cases.items():
        wait_for(partial(_held_by, c, vm, source), 15, f"{vm}: the target let go")
        assert c.world.holders(vm) == {source}
        assert c.running_on(vm) == source
        assert time.monotonic() - since < SLOW + 5, "aborted, not completed and moved back"
        seen = states(c, vm, since=since)
        assert f"{source} migration-failed" in seen, seen
        assert stops(c, vm, source, since) == [], seen
        assert states(c, vm, target, since) == [f"incoming:{source}", "off:migration-failed"]
        wait_for(partial(_runs_on, c, vm, source), 10, f"{vm} Running on {source}")
    no_violation(c)


# -- f-h: a node dies mid-migration ---------------------------------------------------------


def migrating(c: ChaosCluster, vm: str) -> tuple[str, str, float]:
    """``vm`` running on a node that is not the primary, a slow live migration of it to
    another such node under way: (source, target, when it was asked for)."""
    source, target = non_primary(c, 2)
    apply_on(c, vm, source)
    c.world.slow_migrations(vm, SLOW)
    since = time.monotonic()
    assert migrate(c, vm, target).status_code == 200
    incoming(c, vm, target)
    return source, target, since


def test_f_target_loses_power_mid_migration(c: ChaosCluster) -> None:
    source, target, since = migrating(c, "lf")
    c.world.power_off(target)
    assert c.world.holders("lf") == {source}
    # Until the VM is placed away from the dead target, it runs on the source throughout.
    deadline = time.monotonic() + FENCED
    while c.placement_of("lf") == target:
        assert c.world.domain_state(source, "lf") == DomainState.RUNNING, states(c, "lf")
        assert time.monotonic() < deadline, "lf still placed on the dead target"
        time.sleep(0.05)
    assert stops(c, "lf", source, since) == [], states(c, "lf", since=since)
    assert "migration-failed" in states(c, "lf", source, since)
    # The event follows the write that moved the VM (an event records what was done).
    wait_for(
        lambda: [r for r, _ in events(c, "lf") if r in ("MigrationFailed", "Recovered")],
        10,
        "a MigrationFailed or Recovered event of lf",
    )
    running_once(c, "lf")
    no_violation(c)


def test_f_recovery_keeps_a_vm_where_its_failed_migration_left_it(c: ChaosCluster) -> None:
    """The target loses power mid-migration while pvcnoded on the source is stopped (so it
    cannot report the failure and have the VM placed back): the recovery after the target's
    fence must place the VM on the source, where it still runs, not on a third node (a move
    of a running guest) nor nowhere (a shutdown)."""
    source, target, since = migrating(c, "lf2")
    inc = c.current(source)
    assert inc is not None and inc.daemon is not None
    inc.daemon.stopped.set()  # systemctl stop pvcnoded: libvirtd and the guest carry on
    try:
        wait_for(lambda: inc.ended, 30, f"{source}'s daemon to stop")
        c.world.power_off(target)
        assert c.world.holders("lf2") == {source}
        wait_for(lambda: c.placement_of("lf2") != target, FENCED, "lf2 recovered from the target")
        assert c.placement_of("lf2") == source, events(c, "lf2")
        # The Recovered event follows the placement write it reports: wait for it.
        recovered = event(c, "lf2", "Recovered")
        assert f"still runs on {source}" in recovered, recovered
    finally:
        c.boot(source)
    assert running_once(c, "lf2") == source
    assert stops(c, "lf2", source, since) == [], states(c, "lf2", since=since)
    no_violation(c)


def test_g_source_loses_power_mid_migration(c: ChaosCluster) -> None:
    source, target, since = migrating(c, "lg")
    c.world.power_off(source)
    assert c.world.holders("lg") == set(), "the incoming copy dies with its source"
    # Nothing starts it before the fence released the source (the world would say so).
    running_once(c, "lg")
    seen = states(c, "lg", since=since)
    assert f"{target} off:migration-failed" in seen or f"{target} off:power-lost" in seen, seen
    no_violation(c)


def test_h_primary_dies_mid_migration(c: ChaosCluster) -> None:
    primary = c.primary()
    assert primary is not None
    source, target, since = migrating(c, "lh")
    assert c.kill(primary)
    wait_for(lambda: c.primary() not in (None, primary), 30, "a new primary")
    assert running_once(c, "lh", 30) == target
    assert stops(c, "lh", source, since) == [], states(c, "lh", since=since)
    no_violation(c)


# -- i-k: flush and unflush -------------------------------------------------------------------


def _max_in_flight(c: ChaosCluster, source: str, since: float) -> int:
    """The most live migrations away from ``source`` under way at once, by the world."""
    flying: set[str] = set()
    most = 0
    for t in c.world.transitions:
        if t.t < since or t.node != source:
            continue
        if t.state.startswith("migrating-out:"):
            flying.add(t.vm)
            most = max(most, len(flying))
        elif t.state in ("off:migrated", "migration-failed") or t.state.startswith("off:"):
            flying.discard(t.vm)
    return most


def _set_max_parallel(c: ChaosCluster, per_node: int) -> None:
    cluster = c.timings.cluster_object()
    cluster["spec"]["migration"] = {"maxParallel": {"perNode": per_node, "cluster": 4}}
    c.apply(cluster)


def test_i_flush_and_unflush_live(c: ChaosCluster) -> None:
    node = "n4"  # never primary
    vms = [f"li{k}" for k in range(1, 5)]
    _set_max_parallel(c, 2)
    try:
        for vm in vms:
            c.apply_vm(vm, placement={"home": node})
        for vm in vms:
            c.wait_running(vm, 30, node=node)
        since = time.monotonic()
        assert c.verb("nodes", node, "flush") == 200
        wait_for(lambda: node_state(c, node) == NodeDomainState.FLUSHED, 40, f"{node} flushed")
        assert _max_in_flight(c, node, since) == 2
        for vm in vms:
            assert running_once(c, vm, 10) != node
            assert stops(c, vm, node, since) == [], states(c, vm, since=since)
        drained = next(x for x in c.node_status(node).conditions if x.type == "Drained")
        assert drained.status == "True"

        back = time.monotonic()
        assert c.verb("nodes", node, "ready") == 200
        wait_for(lambda: node_state(c, node) == NodeDomainState.READY, 40, f"{node} ready")
        for vm in vms:
            assert running_once(c, vm, 10) == node
            assert states(c, vm, node, back)[0].startswith("incoming:"), "back live"
        assert _max_in_flight(c, node, back) == 0  # they came in; none went out

        # A flush cancelled while two live migrations are in flight.
        for vm in vms:
            c.world.slow_migrations(vm, SLOW)
        since = time.monotonic()
        assert c.verb("nodes", node, "flush") == 200
        wait_for(
            lambda: sum(len(c.world.holders(vm)) == 2 for vm in vms) == 2,
            20,
            "two migrations in flight",
        )
        moving = {vm for vm in vms if len(c.world.holders(vm)) == 2}
        assert c.verb("nodes", node, "ready") == 200
        wait_for(lambda: node_state(c, node) == NodeDomainState.READY, 40, f"{node} ready again")
        for vm in vms:
            assert running_once(c, vm, 20) == node
        for vm in set(vms) - moving:
            assert states(c, vm, node, since) == [], "a VM not yet moved was never moved"
        for vm in moving:
            assert stops(c, vm, node, since) == [], states(c, vm, since=since)
        assert _max_in_flight(c, node, since) == 2
    finally:
        _set_max_parallel(c, 1)
    no_violation(c)


def test_j_flush_during_a_takeover(c: ChaosCluster) -> None:
    """The primary stops (an orderly stop: a handover) and a flush lands at once: the new
    primary carries it out."""
    primary = c.primary()
    assert primary is not None
    node, other = non_primary(c, 2)
    apply_on(c, "lj", node)
    inc = c.current(primary)
    assert inc is not None and inc.daemon is not None
    since = time.monotonic()
    inc.daemon.stopped.set()
    assert c.verb("nodes", node, "flush") == 200
    wait_for(lambda: node_state(c, node) == NodeDomainState.FLUSHED, 40, f"{node} flushed")
    assert c.primary() not in (None, primary)
    assert running_once(c, "lj", 10) == other  # the stopped primary takes nothing
    assert stops(c, "lj", node, since) == [], states(c, "lj", since=since)
    wait_for(lambda: inc.ended, 30, f"{primary}'s daemon to stop")
    c.boot(primary)
    no_violation(c)


def test_k_a_vm_that_can_go_nowhere(c: ChaosCluster) -> None:
    node = "n4"
    apply_on(c, "lk1", node, autostart=True, placement={"nodes": [node]})
    apply_on(c, "lk0", node)
    assert c.verb("nodes", node, "flush") == 200
    wait_for(lambda: node_state(c, node) == NodeDomainState.FLUSHED, 30, f"{node} flushed")
    assert c.placement_of("lk1") is None
    wait_for(lambda: not c.world.holders("lk1"), 10, "lk1 shut down")
    assert "shutting-down" in states(c, "lk1", node)
    assert running_once(c, "lk0", 10) != node
    assert c.verb("nodes", node, "ready") == 200
    assert c.wait_running("lk1", 30, node=node) == node
    wait_for(lambda: node_state(c, node) == NodeDomainState.READY, 30, f"{node} ready")

    apply_on(c, "lk2", node, placement={"nodes": [node]})
    assert c.verb("nodes", node, "flush") == 200
    assert f"cannot leave {node}" in event(c, "lk2", "FlushBlocked")
    holds_for(lambda: c.running_on("lk2") == node, 3.0, "lk2 running on the flushed node")
    assert node_state(c, node) == NodeDomainState.FLUSHING
    no_violation(c)
