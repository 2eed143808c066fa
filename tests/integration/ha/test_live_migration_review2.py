"""Second adversarial review of live migration (the fixes of 9d171f9): interleavings that
still break it.

Each test is one finding, fixed now and kept so it stays fixed. Real daemons over a real
ZooKeeper (tests/chaos/harness.py) with the fault-injecting hypervisor live-migrating between
its hosts; what a user would notice is read from the world's hosts and the holder sets.
A slow migration (``world.slow_migrations``) stands in for a guest whose migration does not
converge soon (libvirt's job then runs on for as long as the guest dirties memory).
"""

from __future__ import annotations

import threading
import time

from hypervisor import DomainState, HypervisorError
from schemas import VirtualMachine
from tests.chaos.harness import ChaosCluster, Incarnation
from tests.helpers import wait_for
from tests.integration.ha import test_live_migration_review as first
from tests.integration.ha.test_live_migration_review import (
    SOURCE,
    TARGET,
    _incoming,
    _migrate,
    _stops,
    _violations,
)
from zkstore import Holders

# The first review's fixtures: a cluster of this module's own, every node ready to
# live-migrate, the test's VMs deleted afterwards.
cluster = first.cluster
c = first.c


def _stop_daemon(c: ChaosCluster, node: str) -> Incarnation:
    """``systemctl stop pvcnoded``: libvirtd (the world) carries on with its jobs."""
    inc = c.current(node)
    assert inc is not None and inc.daemon is not None
    inc.daemon.stopped.set()
    wait_for(lambda: inc.ended, 30, f"{node}'s daemon to stop")
    return inc


def test_a_restarted_source_aborts_when_placed_back(c: ChaosCluster) -> None:
    """n4 -> n2 under way (a long one); pvcnoded on n4 restarts and meanwhile the user
    migrates the VM back to n4: docs/ha.md says the source aborts the job and keeps the
    guest. It must run on n4 alone soon, never stopped."""
    vm = "s1"
    c.apply_vm(vm, shutdown_timeout="2s", placement={"home": SOURCE})
    c.wait_running(vm, 30, node=SOURCE)
    c.world.slow_migrations(vm, 60.0)
    try:
        since = time.monotonic()
        _migrate(c, vm, TARGET)
        _incoming(c, vm, TARGET)
        _stop_daemon(c, SOURCE)
        _migrate(c, vm, SOURCE)  # placed back while pvcnoded restarts
        c.boot(SOURCE)
        assert c.wait_running(vm, 20, node=SOURCE) == SOURCE
        assert _stops(c, vm, SOURCE, since) == []
        assert _violations(c) == []
    finally:
        c.world.slow_migrations(vm, None)


def test_a_vm_deleted_while_its_migration_is_followed_leaves_no_holder(c: ChaosCluster) -> None:
    """n4 -> n2 under way; pvcnoded on n4 restarts and follows libvirt's job; the user
    deletes the VM. Every node must let go of it (a VM created again under the name, or a
    flush of n2, or deleting Node n2, waits for every holder)."""
    vm = "s2"
    c.apply_vm(vm, shutdown_timeout="2s", placement={"home": SOURCE})
    c.wait_running(vm, 30, node=SOURCE)
    c.world.slow_migrations(vm, 30.0)
    try:
        _migrate(c, vm, TARGET)
        _incoming(c, vm, TARGET)
        _stop_daemon(c, SOURCE)
        c.boot(SOURCE)
        wait_for(
            lambda: c.daemon(SOURCE).vms.departures.flights.get(vm) is not None,
            20,
            "the restarted source to follow the migration",
        )

        def slow_poll(*_: object) -> None:
            # The follow polls libvirt once a second; libvirt's destroy and undefine take
            # far less (the simulated destroy takes 1.5 s): its next poll comes after them.
            if threading.current_thread().name.startswith("follow-") and not c.store.exists(
                VirtualMachine, vm
            ):
                wait_for(
                    lambda: c.world.domain_state(SOURCE, vm) == DomainState.ABSENT,
                    10,
                    "the undefine",
                )

        c.hooks.after("migration_progress", slow_poll, node=SOURCE, vm=vm, once=False)
        assert c.delete_vm(vm) in (200, 202)
        holders = Holders(c.store)
        wait_for(lambda: not c.world.holders(vm), 20, f"{vm} gone from every host")
        # The follow notices the job's end within a second and its reconcile forgets it
        # (_pop_done); a second later no node may still hold the deleted VM.
        flights = c.daemon(SOURCE).vms.departures.flights
        wait_for(lambda: flights.get(vm) is None, 15, "the restarted source to forget the job")
        forgotten = time.monotonic()
        wait_for(
            lambda: time.monotonic() - forgotten > 1.0 and not holders.read(vm),
            10,
            f"every node to let go of {vm}",
        )
        assert _violations(c) == []
    finally:
        c.world.slow_migrations(vm, None)


def _job_completes_while_the_source_is_down(c: ChaosCluster, vm: str) -> None:
    """n4 -> n2 under way; the VM is placed back on n4 before n2's incoming copy exists, so
    n2 lets go of it; pvcnoded on n4 stops before it can abort the job, and libvirt completes
    the job meanwhile: the guest runs on n2, which holds nothing, and n4's daemon never saw
    the end. n2 looks at its copy again (to move it on, or to give the move up while n4 is
    down) only once the restarted n4 made its choice (started a copy, or made n2 a holder
    again): the window that restart lands in."""
    holders = Holders(c.store)

    def place_back_first(*_: object) -> None:
        # On n4's migration thread, before libvirt's job begins.
        if threading.current_thread().name.startswith("migrate-"):
            _migrate(c, vm, SOURCE)
            wait_for(lambda: TARGET not in holders.read(vm), 20, "n2 to let go")

    def abort_fails(*_: object) -> None:
        raise HypervisorError("simulated: the abort does not reach libvirtd")

    def source_decided(*_: object) -> None:
        if c.world.domain_state(TARGET, vm) != DomainState.RUNNING:
            return  # still arriving
        wait_for(
            lambda: (
                c.world.domain_state(SOURCE, vm) not in (None, DomainState.ABSENT)
                or TARGET in holders.read(vm)
            ),
            30,
            "the restarted n4 to decide",
        )

    c.hooks.before("migrate", place_back_first, node=SOURCE, vm=vm)
    failing = c.hooks.before("abort_migration", abort_fails, node=SOURCE, vm=vm, once=False)
    _migrate(c, vm, TARGET)
    _incoming(c, vm, TARGET)
    c.hooks.before("info", source_decided, node=TARGET, vm=vm, once=False)
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


def test_a_job_that_completes_while_the_source_is_down_is_handed_over(c: ChaosCluster) -> None:
    """The restarted n4 finds no job and no domain: it must not start a second copy while n2
    runs the guest. Its record says where the job went, so n2 holds the VM again and moves
    it back live: the guest never stops."""
    vm = "s3"
    c.apply_vm(vm, shutdown_timeout="2s", placement={"home": SOURCE})
    c.wait_running(vm, 30, node=SOURCE)
    c.world.slow_migrations(vm, 3.0)
    try:
        since = time.monotonic()
        _job_completes_while_the_source_is_down(c, vm)
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
        _job_completes_while_the_source_is_down(c, vm)
        assert c.delete_vm(vm) in (200, 202)
        c.boot(SOURCE)
        wait_for(lambda: not c.store.exists(VirtualMachine, vm), 40, f"{vm} deleted")
        assert c.world.domain_state(TARGET, vm) in (None, DomainState.ABSENT)
        assert _violations(c) == []
    finally:
        c.world.slow_migrations(vm, None)
