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

from hypervisor import DomainState
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
