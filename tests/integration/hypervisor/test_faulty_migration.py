"""Live migration between the simulated hosts of a HypervisorWorld: what each node holds
before, during and after, the ways it fails, and the one-copy record through it all."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

from hypervisor import (
    DomainSpec,
    DomainState,
    HypervisorUnavailable,
    HypervisorWorld,
    MigrationFailed,
    MigrationProgress,
    MigrationTarget,
    MigrationUnsupported,
    OperationFailed,
    StopReason,
    Timings,
    write_test_host_xml,
)
from tests.helpers import wait_for

TIMINGS = Timings(start=0.05, shutdown=0.1, destroy=0.1, migrate=0.4)
SLOW = 5.0
"""Seconds of a migration that a test ends before it completes."""
SPEC = DomainSpec(
    name="vm1",
    uuid=str(uuid.uuid5(uuid.NAMESPACE_DNS, "vm1.migration.pvc.invalid")),
    vcpus=1,
    memory_mib=256,
    owner_tag="test-cluster",
)


def target(node: str) -> MigrationTarget:
    return MigrationTarget(node=node, uri=f"qemu+tcp://{node}/system", address=f"tcp://{node}")


class Hosts:
    """Three simulated nodes n1-n3 of one world; vm1 defined and running on n1."""

    def __init__(self, world: HypervisorWorld, tmp_path: Path, pool: ThreadPoolExecutor) -> None:
        self.world = world
        self.pool = pool
        self.n1, self.n2, self.n3 = (
            world.driver(node, write_test_host_xml(tmp_path / f"{node}.xml", 2048, 2))
            for node in ("n1", "n2", "n3")
        )
        self.n1.define(SPEC)
        self.n1.start("vm1")

    def migrate(self, to: str = "n2", seconds: float | None = None) -> Future[None]:
        """n1 migrates vm1 to ``to`` in a thread (taking ``seconds`` if given); returns once
        ``to`` holds the incoming copy."""
        if seconds is not None:
            self.world.slow_migrations("vm1", seconds)
        future = self.pool.submit(self.n1.migrate, "vm1", target(to), max_downtime_ms=300)
        wait_for(
            lambda: future.done() or self.world.holders("vm1") == {"n1", to},
            timeout=2,
            what=f"the incoming copy on {to}",
        )
        return future

    def holders(self) -> set[str]:
        return self.world.holders("vm1")


@pytest.fixture
def hosts(tmp_path: Path) -> Iterator[Hosts]:
    world = HypervisorWorld(TIMINGS)
    with ThreadPoolExecutor(max_workers=4) as pool:
        yield Hosts(world, tmp_path, pool)
    world.close()


def error_of(future: Future[None]) -> BaseException | None:
    return future.exception(timeout=SLOW + 2)


def vm1_transitions(world: HypervisorWorld) -> list[str]:
    return [f"{t.node} {t.state}" for t in world.transitions if t.vm == "vm1"]


def assert_no_copy_left(hosts: Hosts) -> None:
    assert hosts.holders() == set()
    assert hosts.n2.state("vm1") is DomainState.ABSENT
    assert hosts.n2.list_managed() == []
    assert hosts.world.violations == []


def assert_still_on_n1_only(hosts: Hosts) -> None:
    assert hosts.holders() == {"n1"}
    assert hosts.n1.state("vm1") is DomainState.RUNNING
    assert hosts.n2.state("vm1") is DomainState.ABSENT
    assert hosts.n2.list_managed() == []
    assert hosts.n1.migration_progress("vm1") is None
    assert hosts.world.violations == []


def test_a_migration_moves_the_running_domain_and_its_definition(hosts: Hosts) -> None:
    n1, n2, world = hosts.n1, hosts.n2, hosts.world
    events: dict[str, list[str]] = {"n1": [], "n2": []}
    n1.watch_lifecycle(events["n1"].append)
    n2.watch_lifecycle(events["n2"].append)
    assert n1.live_migration_problem() is None
    begun = time.monotonic()

    migration = hosts.migrate()
    # During: the source runs on n1, the incoming copy is held paused on n2.
    assert n1.state("vm1") is DomainState.RUNNING
    assert n2.state("vm1") is DomainState.PAUSED
    assert world.domain_state("n2", "vm1") is DomainState.PAUSED
    incoming = n2.info("vm1")
    assert incoming is not None
    assert (incoming.uuid, incoming.state, incoming.owner_tag) == (
        SPEC.uuid,
        DomainState.PAUSED,
        "test-cluster",
    )
    assert [info.name for info in n2.list_managed()] == ["vm1"]
    assert n2.stop_reason("vm1") is StopReason.NOT_STOPPED
    incoming = n2.migration_progress("vm1")  # the destination sees the job, as incoming
    assert incoming is not None and incoming.outgoing is False
    n2.start("vm1")  # the incoming copy is active already: a no-op
    assert n2.state("vm1") is DomainState.PAUSED

    assert error_of(migration) is None
    assert time.monotonic() - begun >= TIMINGS.migrate
    # After: off with reason MIGRATED and undefined on n1; running and defined on n2.
    assert hosts.holders() == {"n2"}
    assert n1.state("vm1") is DomainState.ABSENT
    assert n1.stop_reason("vm1") is StopReason.MIGRATED
    assert n1.list_managed() == []
    assert n1.migration_progress("vm1") is None
    assert n2.state("vm1") is DomainState.RUNNING
    assert [(i.name, i.uuid, i.state) for i in n2.list_managed()] == [
        ("vm1", SPEC.uuid, DomainState.RUNNING)
    ]
    n2.destroy("vm1")
    assert n2.state("vm1") is DomainState.SHUTOFF  # the definition stays on n2
    assert world.violations == []
    assert vm1_transitions(world)[-8:] == [
        "n1 migrating-out:n2",
        "n2 incoming:n1",
        "n1 off:migrated",
        "n1 undefined",
        "n2 defined",
        "n2 running",
        "n2 destroying",
        "n2 off:destroyed",
    ]
    wait_for(lambda: len(events["n2"]) >= 4, timeout=1, what="events on n2")
    assert events["n1"] and set(events["n1"]) == set(events["n2"]) == {"vm1"}

    n1.define(SPEC)  # defined anew where it was migrated from: no longer "migrated"
    assert n1.stop_reason("vm1") is not StopReason.MIGRATED


def test_progress_falls_from_the_domains_memory_while_it_runs(hosts: Hosts) -> None:
    migration = hosts.migrate(seconds=1.0)
    first = hosts.n1.migration_progress("vm1")
    assert first is not None
    assert first.data_total == SPEC.memory_mib * 1024 * 1024
    assert first.data_remaining is not None and first.data_processed is not None
    assert first.data_remaining + first.data_processed == first.data_total

    def a_later_sample() -> MigrationProgress | None:
        sample = hosts.n1.migration_progress("vm1")
        return sample if sample is not None and sample.elapsed_ms != first.elapsed_ms else None

    later = wait_for(a_later_sample, timeout=1, what="a later sample")
    assert later is not None
    assert later.data_remaining is not None and later.data_remaining < first.data_remaining
    assert later.elapsed_ms is not None and first.elapsed_ms is not None
    assert later.elapsed_ms > first.elapsed_ms
    assert error_of(migration) is None
    assert hosts.n1.migration_progress("vm1") is None


def test_an_abort_fails_it_and_the_domain_stays_on_the_source(hosts: Hosts) -> None:
    begun = time.monotonic()
    migration = hosts.migrate(seconds=SLOW)
    assert hosts.n2.abort_migration("vm1") is False  # not the source: no job there
    assert hosts.n1.abort_migration("vm1") is True
    error = error_of(migration)
    assert isinstance(error, MigrationFailed)
    assert "aborted" in str(error)
    assert time.monotonic() - begun < SLOW
    assert_still_on_n1_only(hosts)
    assert hosts.n1.abort_migration("vm1") is False
    assert vm1_transitions(hosts.world)[-2:] == ["n1 migration-failed", "n2 off:migration-failed"]


def test_the_target_losing_power_fails_it(hosts: Hosts) -> None:
    migration = hosts.migrate(seconds=SLOW)
    hosts.world.power_off("n2")
    error = error_of(migration)
    assert isinstance(error, MigrationFailed)
    assert "n2 lost power" in str(error)
    hosts.world.power_on("n2")
    assert_still_on_n1_only(hosts)


def test_the_source_losing_power_ends_both_copies_and_the_caller_cannot_know(
    hosts: Hosts,
) -> None:
    migration = hosts.migrate(seconds=SLOW)
    hosts.world.power_off("n1")
    assert isinstance(error_of(migration), HypervisorUnavailable)
    assert_no_copy_left(hosts)


def test_an_injected_failure_fails_half_way_then_the_next_one_completes(hosts: Hosts) -> None:
    hosts.world.fail_migrations("vm1", "simulated link failure")
    begun = time.monotonic()
    migration = hosts.migrate()
    error = error_of(migration)
    took = time.monotonic() - begun
    assert isinstance(error, MigrationFailed)
    assert "simulated link failure" in str(error)
    assert TIMINGS.migrate / 2 <= took < TIMINGS.migrate
    assert_still_on_n1_only(hosts)

    assert error_of(hosts.migrate()) is None
    assert hosts.holders() == {"n2"}


def test_a_host_that_cannot_live_migrate_refuses_at_once(hosts: Hosts, tmp_path: Path) -> None:
    hosts.world.set_live_migration("n1", False)
    assert hosts.n1.live_migration_problem() == "simulated host n1 cannot live-migrate"
    before = hosts.world.transitions
    with pytest.raises(MigrationUnsupported):
        hosts.n1.migrate("vm1", target("n2"), max_downtime_ms=300)
    assert hosts.world.transitions == before
    assert_still_on_n1_only(hosts)
    hosts.world.set_live_migration("n1", None)
    assert hosts.n1.live_migration_problem() is None

    no_migration = HypervisorWorld(TIMINGS, live_migration=False)
    try:
        driver = no_migration.driver("n9", write_test_host_xml(tmp_path / "n9.xml", 2048, 2))
        assert driver.live_migration_problem() == "simulated host n9 cannot live-migrate"
    finally:
        no_migration.close()


def test_what_cannot_migrate_fails_at_once_and_changes_nothing(hosts: Hosts) -> None:
    n1, world = hosts.n1, hosts.world
    world.power_off("n3")
    hosts.n2.define(SPEC)
    for to, why in (
        ("n3", "target host n3 is powered off"),
        ("n7", "target n7 is no simulated host"),
        ("n1", "the target is the source"),
    ):
        with pytest.raises(MigrationFailed, match=why):
            n1.migrate("vm1", target(to), max_downtime_ms=300)
    hosts.n2.start("vm1")  # a second copy: a violation, and no migration to n2
    with pytest.raises(MigrationFailed, match="already active on n2"):
        n1.migrate("vm1", target("n2"), max_downtime_ms=300)
    hosts.n2.destroy("vm1")
    n1.destroy("vm1")
    with pytest.raises(MigrationFailed, match="not running on n1"):
        n1.migrate("vm1", target("n2"), max_downtime_ms=300)
    assert hosts.holders() == set()
    assert not any("migrat" in state or "incoming" in state for state in vm1_transitions(world))


def test_a_third_node_starting_it_during_a_migration_is_a_violation(hosts: Hosts) -> None:
    hosts.n3.define(SPEC)
    migration = hosts.migrate(seconds=SLOW)
    assert hosts.world.violations == []  # the incoming copy beside its source is none
    hosts.n3.start("vm1")
    [violation] = hosts.world.violations
    assert violation.nodes == ("n1", "n2", "n3")
    assert hosts.n1.abort_migration("vm1")
    assert isinstance(error_of(migration), MigrationFailed)


def test_destroying_the_source_fails_it_and_drops_the_incoming_copy(hosts: Hosts) -> None:
    migration = hosts.migrate(seconds=SLOW)
    hosts.n1.destroy("vm1")
    assert isinstance(error_of(migration), MigrationFailed)
    assert hosts.n1.state("vm1") is DomainState.SHUTOFF
    assert_no_copy_left(hosts)


def test_a_crash_of_the_source_fails_it(hosts: Hosts) -> None:
    migration = hosts.migrate(seconds=SLOW)
    hosts.world.crash("n1", "vm1")
    error = error_of(migration)
    assert isinstance(error, MigrationFailed)
    assert "crashed" in str(error)
    assert hosts.n1.state("vm1") is DomainState.CRASHED
    assert_no_copy_left(hosts)


def test_undefining_the_incoming_copy_kills_it_and_fails_the_migration(hosts: Hosts) -> None:
    migration = hosts.migrate(seconds=SLOW)
    with pytest.raises(OperationFailed, match="live migration"):
        hosts.n2.shutdown("vm1")
    with pytest.raises(OperationFailed, match="live migration"):
        hosts.n1.shutdown("vm1")
    hosts.n2.undefine("vm1")
    assert isinstance(error_of(migration), MigrationFailed)
    assert_still_on_n1_only(hosts)


def test_a_cut_source_completes_it_but_cannot_tell_and_a_cut_target_changes_nothing(
    hosts: Hosts,
) -> None:
    migration = hosts.migrate()
    hosts.world.cut("n1")
    assert isinstance(error_of(migration), HypervisorUnavailable)
    assert hosts.holders() == {"n2"}
    hosts.world.uncut("n1")
    assert hosts.n1.state("vm1") is DomainState.ABSENT

    back = hosts.pool.submit(hosts.n2.migrate, "vm1", target("n1"), max_downtime_ms=300)
    wait_for(lambda: hosts.holders() == {"n1", "n2"}, timeout=2, what="incoming on n1")
    hosts.world.cut("n1")
    assert error_of(back) is None
    hosts.world.uncut("n1")
    assert hosts.holders() == {"n1"}
    assert hosts.n1.state("vm1") is DomainState.RUNNING
    assert hosts.world.violations == []
