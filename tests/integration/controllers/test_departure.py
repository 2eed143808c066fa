"""A node's decisions about a VM whose domain runs on it while the VM is placed elsewhere
(controllers/departure.py), against a real ZooKeeper and the fault-injecting hypervisor."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from controllers import departure
from controllers.departure import Departures
from controllers.live_migration import MAX_ATTEMPTS, MoveOut
from controllers.vm_status import StatusWriter
from hypervisor import DomainSpec, DomainState, HypervisorWorld, Timings, write_test_host_xml
from schemas import (
    CLUSTER_NAME,
    Cluster,
    ClusterSpec,
    DaemonState,
    FencingConfig,
    MigrationState,
    Node,
    NodeSpec,
    NodeStatus,
    ObjectMeta,
    Placement,
    VirtualMachine,
    VirtualMachineSpec,
    set_condition,
)
from tests.helpers import wait_for
from zkstore import Claim, Holders, Release, Store


@pytest.fixture
def world() -> Iterator[HypervisorWorld]:
    the_world = HypervisorWorld(Timings(start=0.0, shutdown=0.0, destroy=0.0))
    yield the_world
    the_world.close()


def test_a_vm_placed_back_here_between_the_reconciles_reads_is_not_shut_down(
    store: Store, world: HypervisorWorld, tmp_path: Path
) -> None:
    """The target of a live migration lost power; the move failed and the guest ran on
    here. The reconcile read its cache (placed on the dead target) just before the fence's
    recovery placed the VM back here; its next read, fresh, names this node. Found by the
    chaos suite (test_f_target_loses_power_mid_migration), where the guest was then shut
    down: nothing may leave a node the VM is placed on."""
    driver = world.driver("n1", write_test_host_xml(tmp_path / "n1.xml", 4096, 4))
    vm = store.create(
        VirtualMachine(metadata=ObjectMeta(name="back"), spec=VirtualMachineSpec(memory="64Mi"))
    )
    driver.define(DomainSpec(name="back", uuid=str(uuid.uuid4()), vcpus=1, memory_mib=64))
    driver.start("back")
    woken: list[str] = []
    departures = Departures(
        store, driver, "n1", Holders(store), StatusWriter(store, "n1"), woken.append
    )

    store.write_placement("back", Placement(node="n3"), epoch=None)  # n3: gone
    delay, move = departures.leave(vm, None, DomainState.RUNNING)
    assert delay is not None, "a move to a node that does not exist shut the guest down"
    assert move is not None and move.failed, move

    store.write_placement("back", Placement(node="n1"), epoch=None)  # the recovery
    delay, move = departures.leave(vm, move, DomainState.RUNNING)
    assert delay is not None, "placed here, yet told to shut the guest down"
    assert world.domain_state("n1", "back") == DomainState.RUNNING


def _node(
    store: Store,
    name: str,
    *,
    beat: str,
    state: DaemonState = DaemonState.RUN,
    ready: bool | None = None,
) -> None:
    """``name``'s status as its agent writes it: a heartbeat at ``beat``, Ready while
    running (unless ``ready`` says otherwise: its hypervisor is down), and a migration URI
    (the target of a live migration must publish one)."""
    if not store.exists(Node, name):
        store.create(Node(metadata=ObjectMeta(name=name), spec=NodeSpec()))
    if ready is None:
        ready = state == DaemonState.RUN
    reason = "HeartbeatOK" if ready else "HypervisorUnavailable"
    conditions = set_condition([], "Ready", ready, reason, "")
    status = NodeStatus(
        conditions=conditions,
        daemon_state=state,
        last_heartbeat=beat,
        migration_uri=f"qemu+tcp://{name}/system",
    )
    store.update_status(Node, name, lambda _previous: status)


def _until_decided(
    departures: Departures, vm: VirtualMachine, move: MoveOut | None, *, seconds: float
) -> tuple[float | None, MoveOut | None]:
    """Look again and again (a reconcile woken early looks early: the source keeps its own
    retry times) until it decides a shutdown move (None), gives the move up, or its last
    attempt has failed."""
    last = [move]

    def decided() -> tuple[float | None, MoveOut | None] | None:
        delay, last[0] = departures.leave(vm, last[0], DomainState.RUNNING)
        now = last[0]
        if delay is None or now is None or now.failed:
            return delay, now
        if now.attempts >= MAX_ATTEMPTS and departures.flights.get(vm.name) is None:
            return delay, now
        return None

    result = wait_for(decided, seconds, "the source's decision")
    assert result is not None  # wait_for returns only a decision
    return result


@pytest.fixture
def moving(
    store: Store, world: HypervisorWorld, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[Departures, VirtualMachine]:
    """VM ``m`` runs on n1 and is placed on n3, which claimed it (both hold it); both nodes
    up, live migration retried after 0.05 s (RETRY_BASE) rather than 2 s."""
    monkeypatch.setattr(departure, "RETRY_BASE", 0.05)
    driver = world.driver("n1", write_test_host_xml(tmp_path / "n1.xml", 4096, 4))
    world.driver("n3", write_test_host_xml(tmp_path / "n3.xml", 4096, 4))
    for node in ("n1", "n3"):
        _node(store, node, beat="2026-12-01T00:00:00Z")
    vm = store.create(
        VirtualMachine(metadata=ObjectMeta(name="m"), spec=VirtualMachineSpec(memory="64Mi"))
    )
    driver.define(DomainSpec(name="m", uuid=str(uuid.uuid4()), vcpus=1, memory_mib=64))
    driver.start("m")
    holders = Holders(store)
    store.write_placement("m", Placement(node="n1"), epoch=None)
    assert holders.claim("m", "n1") == Claim.ADDED
    store.write_placement("m", Placement(node="n3"), epoch=None)
    assert holders.claim("m", "n3") == Claim.ADDED
    departures = Departures(store, driver, "n1", holders, StatusWriter(store, "n1"), _no_wake)
    return departures, vm


def _no_wake(_name: str) -> None:
    """The reconcile's wake-up: these tests look again on their own."""


def test_a_target_that_lost_power_as_live_migration_failed_gets_no_shutdown_move(
    store: Store, world: HypervisorWorld, moving: tuple[Departures, VirtualMachine]
) -> None:
    """The target loses power: every attempt fails ('powered off') while its status still
    says Ready (the primary has not found it silent yet). The third failure must not shut
    the guest down for a move nothing can start: the source waits for a heartbeat of the
    target's, and once the primary marks it dead the move is given up, the guest running
    on here (reviewer's reproduction of test_f_target_loses_power_mid_migration's outage)."""
    departures, vm = moving
    world.power_off("n3")
    delay, move = _until_decided(departures, vm, None, seconds=10)
    assert delay is not None, f"the guest was shut down for a move to a dead node: {move}"
    assert move is not None and move.attempts == MAX_ATTEMPTS and not move.failed
    # Still no heartbeat: it keeps waiting, and the guest keeps running.
    delay, move = departures.leave(vm, move, DomainState.RUNNING)
    assert delay is not None and world.domain_state("n1", "m") == DomainState.RUNNING

    _node(store, "n3", beat="2026-12-01T00:00:00Z", state=DaemonState.DEAD)  # the primary
    delay, move = departures.leave(vm, move, DomainState.RUNNING)
    assert delay is not None and move is not None and move.failed, move
    assert "not ready" in move.failed_message and "keeps running on n1" in move.failed_message
    assert world.domain_state("n1", "m") == DomainState.RUNNING
    migration = store.get(VirtualMachine, "m").status
    assert migration is not None and migration.migration is not None
    assert migration.migration.state == MigrationState.FAILED


def test_live_migration_that_fails_to_a_live_target_falls_back_to_a_shutdown_move(
    store: Store, world: HypervisorWorld, moving: tuple[Departures, VirtualMachine]
) -> None:
    """The other side of it: the target is up (it heartbeats after the last failure), and
    live migration itself fails three times: ``auto`` moves the VM with a shutdown."""
    departures, vm = moving
    world.fail_migrations("m", "injected: does not converge", MAX_ATTEMPTS)
    delay, move = _until_decided(departures, vm, None, seconds=10)
    assert delay is not None and move is not None and move.fallback_by is not None
    _node(store, "n3", beat="2026-12-01T00:00:05Z")  # n3's next heartbeat
    delay, move = departures.leave(vm, move, DomainState.RUNNING)
    assert delay is None and move is not None and move.cold, move
    assert "does not converge" in (move.last_error or "")


def test_a_heartbeat_saying_the_targets_hypervisor_is_down_gets_no_shutdown_move(
    store: Store, world: HypervisorWorld, moving: tuple[Departures, VirtualMachine]
) -> None:
    """n3's libvirtd went down (attempts fail) while its agent runs on: its next heartbeat
    is new, and says Ready False. New as it is, it is no sign that n3 can run the guest:
    the move is given up (decided from that one status read: a review found the two looks
    read it apart), and the status says why."""
    departures, vm = moving
    world.fail_migrations("m", "injected: connection to n3's libvirtd refused", MAX_ATTEMPTS)
    delay, move = _until_decided(departures, vm, None, seconds=10)
    assert delay is not None and move is not None and not move.failed
    _node(store, "n3", beat="2026-12-01T00:00:05Z", state=DaemonState.RUN, ready=False)
    _given_up(world, *departures.leave(vm, move, DomainState.RUNNING), "but the target is not")


def test_a_target_that_never_claims_fails_the_move_after_three_tries(
    store: Store,
    world: HypervisorWorld,
    moving: tuple[Departures, VirtualMachine],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """n3 is Ready but never claims the VM: each claim timeout is an attempt, and after
    three the move is given up (Failed: the primary places it back), not left Waiting for
    good while placed where it does not run; and no shutdown move, which a target that
    never claims would not start either (CLAIM_TIMEOUT shortened to 0.2 s)."""
    departures, vm = moving
    monkeypatch.setattr(departure, "CLAIM_TIMEOUT", 0.2)
    assert Holders(store).release("m", "n3") == Release.RELEASED
    _given_up(world, *_until_decided(departures, vm, None, seconds=10), "did not claim")


def _given_up(world: HypervisorWorld, delay: float | None, move: MoveOut | None, why: str) -> None:
    """The move was given up (Failed, saying ``why``), the guest running on at n1."""
    assert delay is not None and move is not None and move.failed, move
    assert why in move.failed_message
    assert world.domain_state("n1", "m") == DomainState.RUNNING


def test_the_wait_for_a_heartbeat_follows_the_clusters_keepalive(
    store: Store,
    world: HypervisorWorld,
    moving: tuple[Departures, VirtualMachine],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A node heartbeats once per keepaliveInterval, which the cluster may set above
    CLAIM_TIMEOUT: the fallback waits three of them, so a live target's next heartbeat
    comes in time (scaled down: keepalive 1 s, CLAIM_TIMEOUT 0.5 s, n3 beating 1 s on)."""
    departures, vm = moving
    monkeypatch.setattr(departure, "CLAIM_TIMEOUT", 0.5)
    store.create(
        Cluster(
            metadata=ObjectMeta(name=CLUSTER_NAME),
            spec=ClusterSpec(fencing=FencingConfig(keepalive_interval="1s")),
        )
    )
    world.fail_migrations("m", "injected: does not converge", MAX_ATTEMPTS)
    delay, move = _until_decided(departures, vm, None, seconds=10)
    assert delay is not None and move is not None and not move.failed
    beat_at = time.monotonic() + 1.0  # n3's next heartbeat, a keepalive on
    last: list[MoveOut | None] = [move]

    def decided() -> tuple[float | None, MoveOut | None] | None:
        if time.monotonic() >= beat_at:
            _node(store, "n3", beat="2026-12-01T00:00:01Z")
        delay, last[0] = departures.leave(vm, last[0], DomainState.RUNNING)
        return (delay, last[0]) if delay is None or last[0] is None or last[0].failed else None

    result = wait_for(decided, 5, "the fallback's decision")
    assert result is not None  # wait_for returns only a decision
    delay, move = result
    assert delay is None and move is not None and move.cold, f"no fallback to a live target: {move}"
