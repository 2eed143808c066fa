"""Third review of live migration: a job that ends while pvcnoded on its source is down.

The source records where a job goes before libvirt starts it (``set_migrating``), and that
record marks the target's holder entry, which the target cannot remove while the mark is
there: the target holds the VM from before the job begins until the source knows how it
ended. Without it, a target that let go before its incoming copy existed (the VM placed
back, or on a third node) ran the guest holding nothing when the job completed unseen,
and another node started a second copy. Each test is one interleaving the reviews found.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable

from hypervisor import DomainState, HypervisorError
from schemas import DaemonState, VirtualMachine
from tests.chaos.harness import ChaosCluster
from tests.helpers import wait_for
from tests.integration.ha import test_live_migration_review as first
from tests.integration.ha.test_live_migration_review import (
    SOURCE,
    TARGET,
    THIRD,
    _incoming,
    _migrate,
    _stops,
    _violations,
)
from tests.integration.ha.test_live_migration_review2 import _stop_daemon
from zkstore import Holders
from zkstore.moves import node_live_problem

# The first review's fixtures: a cluster of this module's own, every node ready to
# live-migrate, the test's VMs deleted afterwards.
cluster = first.cluster
c = first.c


def _tried_to_let_go(c: ChaosCluster, node: str, vm: str) -> bool:
    """``node`` tried to remove its holder entry and was refused (the source's mark)."""
    return c.daemon(node).vms.claims._blocked.get(vm, 0) > 0


def _job_ends_unseen(
    c: ChaosCluster, vm: str, then: str, under_way: Callable[[], None] = lambda: None
) -> None:
    """n4 -> n2: the VM is placed on ``then`` before n2's incoming copy exists, so n2 tries
    to let go; pvcnoded on n4 stops before it can abort the job, and libvirt completes it
    meanwhile: the guest runs on n2, and n4's daemon never saw the end. ``under_way`` runs
    once the job is under way."""

    def place_first(*_: object) -> None:
        # On n4's migration thread, before libvirt's job begins.
        if threading.current_thread().name.startswith("migrate-"):
            _migrate(c, vm, then)
            wait_for(lambda: _tried_to_let_go(c, TARGET, vm), 20, "n2 to try to let go")

    def abort_fails(*_: object) -> None:
        raise HypervisorError("simulated: the abort does not reach libvirtd")

    c.hooks.before("migrate", place_first, node=SOURCE, vm=vm)
    failing = c.hooks.before("abort_migration", abort_fails, node=SOURCE, vm=vm, once=False)
    _migrate(c, vm, TARGET)
    _incoming(c, vm, TARGET)
    under_way()
    _stop_daemon(c, SOURCE)
    c.hooks.remove(failing)
    wait_for(
        lambda: (
            c.world.domain_state(TARGET, vm) == DomainState.RUNNING
            and c.world.domain_state(SOURCE, vm) in (None, DomainState.ABSENT)
        ),
        30,
        "libvirt's job to complete with n4's daemon down",
    )


def _source_looked(c: ChaosCluster, vm: str, before: int) -> bool:
    """n4's daemon, restarted since incarnation ``before``, has had its first look at
    ``vm`` (or a copy of it started there)."""
    if c.world.domain_state(SOURCE, vm) not in (None, DomainState.ABSENT):
        return True
    inc = c.current(SOURCE)
    daemon = inc.daemon if inc is not None and inc.number > before else None
    if daemon is None:
        return False
    claims = daemon.vms.claims
    looked = claims.claimed(vm) and not claims.held_before(vm)
    return looked or SOURCE not in Holders(c.store).read(vm)  # a deletion: let go


def _n2_waits_for_n4s_look(c: ChaosCluster, vm: str) -> None:
    """n2 looks at its arrived copy (to move it on, or to give the move up while n4 is down)
    only after the restarted n4's first look: the window that restart lands in. And only
    once n4 is ready as a target again: its daemon looks at its VMs before its first
    heartbeat says Ready, and a move to a target that is not ready is given up at once
    (the VM then stays on n2: safe, but not the hand-over these tests are about)."""

    inc = c.current(SOURCE)
    assert inc is not None
    before = inc.number

    def hold(*_: object) -> None:
        if c.world.domain_state(TARGET, vm) == DomainState.RUNNING:
            wait_for(lambda: _source_looked(c, vm, before), 40, "the restarted n4's first look")
            wait_for(
                lambda: node_live_problem(c.store, SOURCE, target=True)[0] is None,
                30,
                "the restarted n4 to be ready as a live-migration target",
            )

    c.hooks.before("info", hold, node=TARGET, vm=vm, once=False)


def test_a_job_that_completes_while_the_source_is_down_is_handed_over(c: ChaosCluster) -> None:
    """Placed back on n4: the restarted n4 finds no job and no domain, and must not start a
    second copy while n2 runs the guest. n2 holds it still, so n4 waits, and n2 moves it
    back live: the guest never stops."""
    vm = "s3"
    c.apply_vm(vm, shutdown_timeout="2s", placement={"home": SOURCE})
    c.wait_running(vm, 30, node=SOURCE)
    c.world.slow_migrations(vm, 3.0)
    try:
        since = time.monotonic()
        _n2_waits_for_n4s_look(c, vm)
        _job_ends_unseen(c, vm, SOURCE)
        c.boot(SOURCE)
        assert c.wait_running(vm, 40, node=SOURCE) == SOURCE
        assert _violations(c) == []
        arrivals = ("incoming:", "defined")  # the move back to n4 arriving
        assert [t for t in _stops(c, vm, SOURCE, since) if not t.startswith(arrivals)] == []
        assert [t for t in _stops(c, vm, TARGET, since) if not t.startswith(arrivals)] == []
    finally:
        c.world.slow_migrations(vm, None)


def test_a_vm_deleted_after_a_job_ended_unseen_waits_for_the_targets_copy(
    c: ChaosCluster,
) -> None:
    """As above, and the user deletes the VM while pvcnoded on n4 is down: the VM must not be
    gone (its name free for a new VM on the same disks) while n2 still runs the guest."""
    vm = "s4"
    c.apply_vm(vm, shutdown_timeout="2s", placement={"home": SOURCE})
    c.wait_running(vm, 30, node=SOURCE)
    c.world.slow_migrations(vm, 3.0)
    try:
        _n2_waits_for_n4s_look(c, vm)
        _job_ends_unseen(c, vm, SOURCE)
        assert c.delete_vm(vm) in (200, 202)
        c.boot(SOURCE)
        wait_for(lambda: not c.store.exists(VirtualMachine, vm), 40, f"{vm} deleted")
        assert c.world.domain_state(TARGET, vm) in (None, DomainState.ABSENT)
        assert _violations(c) == []
    finally:
        c.world.slow_migrations(vm, None)


def test_placed_on_a_third_node_while_the_job_ends_unseen(c: ChaosCluster) -> None:
    """Placed on n3 instead: the restarted n4 finds it placed elsewhere and its domain gone,
    and lets go; n3 must not start it while n2 still runs the guest (n2's moves on to n3
    fail here, as live migrations can)."""
    vm = "x1"
    c.apply_vm(vm, shutdown_timeout="2s", placement={"home": SOURCE})
    c.wait_running(vm, 30, node=SOURCE)
    c.world.slow_migrations(vm, 3.0)
    try:
        # Planned failures apply to the jobs begun after: n2's moves on to n3.
        _job_ends_unseen(
            c,
            vm,
            THIRD,
            lambda: c.world.fail_migrations(vm, "injected: n2 -> n3 does not converge", 10),
        )
        c.boot(SOURCE)
        # n2's live moves to n3 fail; `auto` then moves it with a shutdown: n3 runs it.
        assert c.wait_running(vm, 60, node=THIRD) == THIRD
        assert _violations(c) == [], c.world.format_transitions()
    finally:
        c.world.slow_migrations(vm, None)


def test_the_targets_copy_gone_before_the_source_restarts(c: ChaosCluster) -> None:
    """The guest crashes on n2 right after it arrived (n2 removes the domain: the VM is
    placed on n4), and pvcnoded on n2 restarts before n4's is back: nothing may keep the
    VM from starting on n4 once n4 is back (n2 lets go when n4 clears its record)."""
    vm = "x2"
    c.apply_vm(vm, shutdown_timeout="2s", placement={"home": SOURCE})
    c.wait_running(vm, 30, node=SOURCE)
    c.world.slow_migrations(vm, 3.0)
    try:
        _n2_waits_for_n4s_look(c, vm)
        _job_ends_unseen(c, vm, SOURCE)
        c.hooks.clear()  # n2 looks at once: the guest crashes on it
        c.world.crash(TARGET, vm)
        wait_for(
            lambda: c.world.domain_state(TARGET, vm) in (None, DomainState.ABSENT),
            20,
            "n2 to remove its crashed domain",
        )
        _stop_daemon(c, TARGET)
        c.boot(TARGET)
        wait_for(
            lambda: c.node_status(TARGET).daemon_state == DaemonState.RUN,
            30,
            "n2's daemon back",
        )
        c.boot(SOURCE)
        assert c.wait_running(vm, 40, node=SOURCE) == SOURCE
        assert _violations(c) == []
        for node in (SOURCE, TARGET):  # both restarted: ready again for the next test
            wait_for(lambda n=node: _ready(c, n), 30, f"{node} ready")
    finally:
        c.world.slow_migrations(vm, None)


def _ready(c: ChaosCluster, node: str) -> bool:
    status = c.node_status(node)
    return status.daemon_state == DaemonState.RUN and any(
        x.type == "Ready" and x.status == "True" for x in status.conditions
    )


def test_an_incoming_copy_does_not_hide_the_unseen_end(c: ChaosCluster) -> None:
    """n2 moves the arrived guest back to n4 as soon as n4 is ready, before the restarted
    n4's first look: n4 finds an arriving copy, not a failed job. It must not adopt it
    while n2 holds the VM: the move back fails, and n2 still runs the guest."""
    vm = "x4"
    c.apply_vm(vm, shutdown_timeout="2s", placement={"home": SOURCE})
    c.wait_running(vm, 30, node=SOURCE)
    c.world.slow_migrations(vm, 3.0)
    booted = threading.Event()

    def n2_waits_for_n4(*_: object) -> None:
        if c.world.domain_state(TARGET, vm) != DomainState.RUNNING:
            return
        with contextlib.suppress(TimeoutError):
            wait_for(
                lambda: (
                    booted.is_set()
                    and c.node_status(SOURCE).daemon_state == DaemonState.RUN
                    and any(
                        x.type == "Ready" and x.status == "True"
                        for x in c.node_status(SOURCE).conditions
                    )
                ),
                30,
                "n4 ready again",
            )

    def n4_looks_late(*_: object) -> None:
        with contextlib.suppress(TimeoutError):
            wait_for(lambda: c.world.domain_state(SOURCE, vm) == DomainState.PAUSED, 20, "incoming")

    try:
        c.hooks.before("info", n2_waits_for_n4, node=TARGET, vm=vm, once=False)
        _job_ends_unseen(
            c,
            vm,
            SOURCE,
            lambda: c.world.fail_migrations(vm, "injected: n2 -> n4 fails half-way", 3),
        )
        c.hooks.before("migration_progress", n4_looks_late, node=SOURCE, vm=vm)
        c.boot(SOURCE)
        booted.set()
        # The moves back fail; `auto` then moves it with a shutdown: n4 runs it alone.
        assert c.wait_running(vm, 60, node=SOURCE) == SOURCE
        assert _violations(c) == [], c.world.format_transitions()
    finally:
        c.world.slow_migrations(vm, None)
