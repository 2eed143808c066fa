"""The node's VM controller: a domain exists and runs exactly when the VM is placed here and
its runStrategy says run.

It watches only this node's index (``/index/nodes/<node>``) and the specs of
the VMs listed there, so its watch cost is O(VMs on this node). Every state
change runs in a worker thread and waits by requeueing, never by blocking, so
a VM in a 180 s graceful shutdown delays no other VM.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from kazoo.recipe.watchers import DataWatch

from controllers.crashloop import CrashLoopPolicy
from controllers.departure import Departures
from controllers.domainspec import allocations_of, disk_target, domain_spec
from controllers.runtime import Controller
from controllers.vm_claims import Claims
from controllers.vm_console import ConsolePublisher
from controllers.vm_disks import disks_here, volumes_here
from controllers.vm_power import UP, UP_OR_STOPPING, LocalState, Power, VMEvents
from controllers.vm_resync import FULL_RESYNC_EVERY, ResyncPlan, domain_states
from controllers.vm_status import StatusWriter
from hypervisor import DomainDriver, DomainState, HypervisorError, StopReason
from schemas import (
    Network,
    Placement,
    RunStrategy,
    VirtualMachine,
    VirtualMachineStatus,
    VMPhase,
    verbs,
)
from zkstore import Disks, Holders, Informer, NotFound, Store, paths
from zkstore.codec import decode
from zkstore.deletion import Deletions
from zkstore.events import EventLog

log = logging.getLogger(__name__)

REPORT_AGAIN_AFTER = 10.0
"""Seconds after a passed saving throw when every VM is reported once more."""


class VMController:
    def __init__(
        self,
        store: Store,
        driver: DomainDriver,
        node: str,
        *,
        disk_dir: str,
        shared_disk_dir: bool = False,
        workers: int = 4,
        resync_period: float = 30.0,
        full_resync_every: int = FULL_RESYNC_EVERY,
        crash_loop: CrashLoopPolicy | None = None,
        on_domains_changed: Callable[[], None] | None = None,
        on_domain_started: Callable[[], None] | None = None,
    ) -> None:
        self.store = store
        self.driver = driver
        self.node = node
        self.disk_dir = disk_dir
        self.shared_disk_dir = shared_disk_dir
        self.disks = Disks(store)
        self.events = EventLog(store)
        self.owner_tag = store.root
        self.crash_loop = crash_loop or CrashLoopPolicy()
        self._on_domains_changed = on_domains_changed or (lambda: None)
        # A start may be reported a moment later (starts in a burst share one heartbeat);
        # a stop or removal at once (callers wait for a node to be seen empty).
        self._on_domain_started = on_domain_started or self._on_domains_changed
        self.index = Informer(store, paths.node_index(node), self._enqueue, children=())
        self.holders = Holders(store)
        self._specs: dict[str, VirtualMachine | None] = {}
        # name -> token of its live spec watch; a watch whose token is stale ends itself.
        self._watched: dict[str, int] = {}
        self._tokens = itertools.count(1)
        self._lock = threading.Lock()
        self._local: dict[str, LocalState] = {}
        self.statuses = StatusWriter(store, node)
        self.departures = Departures(
            store, driver, node, self.holders, self.statuses, self._enqueue
        )
        self.claims = Claims(self.holders, node, self.departures, self.statuses, self._enqueue)
        self.consoles = ConsolePublisher(store, driver, node, self.index.keys)
        self.vm_events = VMEvents(self.events, node)
        self.power = Power(driver, node, self.statuses, self.vm_events, self._on_domains_changed)
        self._self_fenced: set[str] = set()
        self.resync_plan = ResyncPlan(full_resync_every)
        self.controller = Controller(
            f"vm@{node}",
            self.reconcile,
            workers=workers,
            resync_period=resync_period,
            list_keys=self._resync_keys,
        )

    # -- wiring ------------------------------------------------------------

    def start(self) -> None:
        self.driver.watch_lifecycle(self._enqueue)
        self.controller.start()
        self.index.start()
        self.consoles.start()
        # Domains left from before a restart that are no longer placed here, and VMs this
        # node still holds from before it (removed, but not yet released).
        for key in self._all_keys() | set(self.holders.held_by(self.node)):
            self.controller.enqueue(key)

    def stop(self) -> None:
        # The workers first: a domain they define on the way out still has its XML
        # published by the console publisher's last look (ConsolePublisher.stop).
        self.controller.stop()
        self.consoles.stop()
        self.index.close()

    def report_all(self) -> None:
        """Reconcile every VM now, so each writes its status again (after the primary marked
        them Unknown and this node passed its saving throw), and again a little later: the
        primary's Unknown writes may land after the first pass, and the periodic resync
        reconciles settled VMs only every 10th pass (vm_resync)."""
        keys = self.index.keys()
        for key in keys:
            self.controller.enqueue(key)
            self.controller.enqueue_after(key, REPORT_AGAIN_AFTER)

    def _all_keys(self) -> set[str]:
        return set(self.index.keys()) | set(self._domains() or ())

    def _resync_keys(self) -> set[str]:
        """What this resync pass reconciles: what changed unseen, or every VM (vm_resync)."""
        return self.resync_plan.keys(set(self.index.keys()), self._domains())

    def _domains(self) -> dict[str, DomainState] | None:
        return domain_states(self.driver, self.owner_tag, self.node)

    def _enqueue(self, name: str) -> None:
        # Runs on kazoo's or libvirt's event thread: only enqueue here. A blocking
        # ZooKeeper call on kazoo's thread would deadlock, so the spec watch is set
        # up by the worker in reconcile.
        self.controller.enqueue(name)

    def _watch_spec(self, name: str) -> None:
        with self._lock:
            if name in self._watched:
                return
            token = self._watched[name] = next(self._tokens)
        # DataWatch reads once now, calling _on_spec before it returns, and again on every
        # change. A call made here, before it returns, is for the reconcile running on this
        # thread, which reads the spec right after: it enqueues nothing (that was a second
        # pass of every new VM, issue 16). Later calls come from kazoo's threads.
        constructing = threading.get_ident()

        def on_data(data: bytes | None, _stat: object, _event: object = None) -> bool:
            here = constructing == threading.get_ident()
            return self._on_spec(name, token, data, enqueue=not here)

        DataWatch(self.store.client, self.store.path(paths.resource("vms", name)), on_data)
        constructing = 0

    def _on_spec(self, name: str, token: int, data: bytes | None, *, enqueue: bool = True) -> bool:
        with self._lock:
            if self._watched.get(name) != token:
                return False  # stop watching: the VM left this node
            vm = None
            if data:
                try:
                    vm = VirtualMachine.model_validate(decode(data))
                except ValueError:
                    log.exception("event=bad_vm_spec vm=%s", name)
            self._specs[name] = vm
        if enqueue:
            self.controller.enqueue(name)
        return True

    def _forget(self, name: str) -> None:
        with self._lock:
            self._watched.pop(name, None)
            self._specs.pop(name, None)
            self._self_fenced.discard(name)
        self.claims.forget(name)
        self._local.pop(name, None)
        self.statuses.forget(name)

    def self_fenced(self, names: list[str]) -> None:
        """These domains are being destroyed on purpose (self-fence): not a guest failure."""
        with self._lock:
            self._self_fenced.update(names)

    # -- reconcile ---------------------------------------------------------

    def reconcile(self, name: str) -> float | None:
        try:
            return self._reconcile(name)
        finally:
            self.claims.pass_over(name)

    def _reconcile(self, name: str) -> float | None:
        self.resync_plan.forget(name)
        raw = self.index.data(name)
        placement = Placement.model_validate(raw) if raw is not None else None
        with self._lock:
            vm = self._specs.get(name)
            known = name in self._watched
        if placement is None or placement.node != self.node:
            # The cache may lag; stopping a domain is decided on a fresh read only.
            if self.store.node_index_entry(self.node, name) is not None:
                return 0.1
            again = self._leave(name, vm)
            if again is not None:
                return again
            self._remove_domain(name)
            again = self.claims.release(name)
            if again is not None:
                return again
            self._forget(name)
            return None
        status_read = None
        if not known:
            # A new VM: the status read shares its round trip with the spec watch's first.
            status_read = self.statuses.prefetch(name)
            self._watch_spec(name)
            with self._lock:
                vm = self._specs.get(name)
        if vm is None:
            if self.store.exists(VirtualMachine, name):
                # The spec watch has not delivered yet, or the spec cannot be read here
                # (logged by the watch): look again, backing off.
                local = self._local.setdefault(name, LocalState())
                local.spec_waits += 1
                delay = min(0.1 * 2.0 ** min(local.spec_waits - 1, 9), 30.0)
                if local.spec_waits in (5, 10) or delay >= 30.0:
                    log.warning(
                        "event=spec_unavailable vm=%s node=%s waits=%d retry_in=%.1fs",
                        name,
                        self.node,
                        local.spec_waits,
                        delay,
                    )
                return delay
            self._remove_domain(name)  # VM deleted; its index entry goes with it
            return self.claims.release(name)
        if vm.deleting:
            return self._delete_here(vm, placement)
        if status_read is None:
            status_read = self.statuses.prefetch(name)  # its round trip overlaps the claim's
        if not self.claims.claim(name):
            return 0.1  # placed elsewhere since the cache said so: the next event tells
        local = self._local.setdefault(name, LocalState())
        local.spec_waits = 0
        flying, migrated = self.departures.settle(name, look=local.started_at is None)
        if flying:
            return 0.5  # placed back here mid-migration: aborted, wait for it to end
        if not migrated and self.claims.held_before(name):
            migrated = self.departures.settle_unseen(name)
            self.claims.looked(name)
        if migrated:
            # Live-migrated away and placed back since: its absence here is no crash.
            local.started_at = None
            local.stop_requested = True
        local.move = None
        status = status_read()
        try:
            if vm.spec.run_strategy == RunStrategy.HALTED:
                return self.power.halt(vm, placement, local, status)
            return self._run(vm, placement, local, status)
        except HypervisorError as exc:
            # Say why in the status; the runtime retries with back-off.
            self.statuses.write(vm, placement, VMPhase.FAILED, "HypervisorError", str(exc))
            raise

    def _run(
        self,
        vm: VirtualMachine,
        placement: Placement,
        local: LocalState,
        status: VirtualMachineStatus,
    ) -> float | None:
        name = vm.name
        now = time.monotonic()
        restart = vm.metadata.annotations.get(verbs.RESTART)
        restart_pending = restart is not None and restart != status.restart_handled
        state = self.driver.state(name)

        if restart_pending and state in UP_OR_STOPPING:
            again = self.power.stop_gracefully(vm, placement, local, state, "Restarting")
            if again is not None:
                return again
            log.info("event=domain_restarting vm=%s node=%s", name, self.node)
            return self._start(vm, placement, local, status, restart)
        if state == DomainState.SHUTTING_DOWN:
            # The guest is powering itself off: its stop event decides what follows.
            self.statuses.write(
                vm, placement, VMPhase.STOPPING, "GuestShuttingDown", "the guest is shutting down"
            )
            return 1.0
        local.stop_deadline = None

        if state in UP:
            return self._running(vm, placement, local, status, now)

        with self._lock:
            # Kept until the domain is started again: reconciles may fail in between.
            self_fenced = name in self._self_fenced
        if self_fenced:
            local.started_at = None
            log.info("event=restart_after_self_fence vm=%s node=%s", name, self.node)
        elif local.stop_requested:
            # Moved away and back while the guest obeyed the shutdown we sent: no failure.
            local.started_at = None
            log.info("event=start_after_move_back vm=%s node=%s", name, self.node)
        elif local.started_at is not None or self.statuses.was_running_here(status):
            # It ran and stopped without us asking: a crash, a guest power-off, a kill.
            local.started_at = None
            reason = self.driver.stop_reason(name) if state != DomainState.ABSENT else None
            if vm.spec.run_strategy == RunStrategy.RERUN_ON_FAILURE and (
                reason == StopReason.GUEST_SHUTDOWN
            ):
                log.info("event=guest_shutdown vm=%s node=%s action=stay_stopped", name, self.node)
                self.vm_events.record(
                    name, "GuestShutdown", f"the guest shut down on {self.node}; stays off"
                )
                self.statuses.write(
                    vm,
                    placement,
                    VMPhase.STOPPED,
                    "GuestShutdown",
                    "the guest shut down; RerunOnFailure leaves it off",
                )
                return None
            status.failures += 1
            local.next_start_at = now + self.crash_loop.delay(status.failures)
            log.warning(
                "event=domain_stopped_unexpectedly vm=%s node=%s reason=%s failures=%d "
                "restart_in=%.0fs",
                name,
                self.node,
                reason.value if reason else "absent",
                status.failures,
                local.next_start_at - now,
            )
            self.vm_events.record(
                name,
                "Crashed",
                f"stopped unexpectedly on {self.node} "
                f"({reason.value if reason else 'its domain is gone'}); "
                f"{status.failures} in a row, starting again in "
                f"{local.next_start_at - now:.0f}s",
                warning=True,
            )
        elif (
            status.reason == "GuestShutdown"
            and status.observed_generation == vm.metadata.generation
            and not restart_pending
        ):
            return None  # stays off until its spec changes or a restart is asked for

        if local.next_start_at is not None and now < local.next_start_at:
            wait = local.next_start_at - now
            self.statuses.write(
                vm,
                placement,
                VMPhase.FAILED,
                "CrashLoopBackOff",
                f"stopped unexpectedly {status.failures} times in a row; "
                f"starting again in {wait:.0f}s",
                failures=status.failures,
            )
            return wait
        local.next_start_at = None
        return self._start(vm, placement, local, status, restart if restart_pending else None)

    def _running(
        self,
        vm: VirtualMachine,
        placement: Placement,
        local: LocalState,
        status: VirtualMachineStatus,
        now: float,
    ) -> float | None:
        if local.started_at is None:
            # Running, yet not started by this process: a daemon restart found it, or a live
            # migration brought it. Ours only once no other node holds it (the source lets
            # go when its copy is gone).
            waiting, _ = self.claims.unless_sole_holder(
                vm, placement, local, status, "IncomingMigration"
            )
            if waiting is not None:
                return waiting
            local.started_at = now
            local.forced_off = local.stop_requested = False
            log.info("event=domain_adopted vm=%s node=%s", vm.name, self.node)
        if local.defined_generation != vm.metadata.generation:
            # Redefining a running domain is safe: libvirt applies it at the next boot.
            if not self._define(vm, placement, local):
                return 30.0
        failures = status.failures
        again: float | None = None
        if failures:
            stable_at = local.started_at + self.crash_loop.reset_after
            if now >= stable_at:
                failures = 0
            else:
                again = stable_at - now
        self.statuses.write(
            vm, placement, VMPhase.RUNNING, "Running", f"running on {self.node}", failures=failures
        )
        self.resync_plan.observe(vm.name, DomainState.RUNNING)
        return again

    def _start(
        self,
        vm: VirtualMachine,
        placement: Placement,
        local: LocalState,
        status: VirtualMachineStatus,
        restart: str | None,
    ) -> float | None:
        name = vm.name
        # One copy: start only as the sole holder, read after a sync (docs/ha.md). Nothing
        # is defined before: a live migration to here brings its own definition.
        again, entry_version = self.claims.unless_sole_holder(
            vm, placement, local, status, "WaitingForSource"
        )
        if again is not None:
            return again
        defined = False
        if (
            local.defined_generation != vm.metadata.generation
            or self.driver.state(name) == DomainState.ABSENT
        ):
            if not self._define(vm, placement, local, publish=False):
                return 30.0
            defined = True
        # Fencing token: start only for the placement ZooKeeper holds now, not a cached one:
        # Starting is written in one transaction with a check that the index entry is still
        # the one the sole-holder read found (with this placement's epoch), right before
        # the start.
        entry = self.store.path(paths.node_index_entry(self.node, name))
        if entry_version is None or not self.statuses.write(
            vm,
            placement,
            VMPhase.STARTING,
            "Starting",
            "starting the domain",
            unless_moved=(entry, entry_version),
            failures=status.failures,
        ):
            log.info("event=start_skipped vm=%s node=%s reason=placement_moved", name, self.node)
            return 0.1
        self.driver.start(name)
        local.started_at = time.monotonic()
        local.forced_off = local.stop_requested = False
        with self._lock:
            self._self_fenced.discard(name)
        extra: dict[str, Any] = {"failures": status.failures}
        if restart is not None:
            extra["restart_handled"] = restart
        self.statuses.write(
            vm, placement, VMPhase.RUNNING, "Running", f"running on {self.node}", **extra
        )
        # Records for people and the heartbeat: after the status that says Running.
        log.info("event=domain_started vm=%s node=%s", name, self.node)
        self.vm_events.record(
            name,
            "Restarted" if restart is not None else "Started",
            f"started on {self.node}" + (f" ({placement.reason})" if placement.reason else ""),
        )
        if defined:
            self.consoles.domain_defined(name)
        self._on_domain_started()
        self.resync_plan.observe(name, DomainState.RUNNING)
        return self.crash_loop.reset_after if status.failures else None

    def _define(
        self, vm: VirtualMachine, placement: Placement, local: LocalState, *, publish: bool = True
    ) -> bool:
        """Define the domain as the spec says; ``publish`` its XML (the caller does later
        when False: a start publishes after it)."""
        targets = {d.name: disk_target(i) for i, d in enumerate(vm.spec.disks)}
        volumes = volumes_here(self.disks, self.driver, self.events, self.node, vm, targets)
        if volumes.reason is not None:
            # Waiting for a pool, a volume or its creator, not a failure of the VM itself.
            self.statuses.write(
                vm, placement, VMPhase.PENDING, volumes.reason, volumes.problem or ""
            )
            log.warning(
                "event=volumes_not_ready vm=%s node=%s reason=%s why=%r",
                vm.name,
                self.node,
                volumes.reason,
                volumes.problem,
            )
            return False
        try:
            networks = {n: self._network(n) for n in {nic.network for nic in vm.spec.nics}}
            spec = domain_spec(
                vm,
                {k: v for k, v in networks.items() if v},
                self.disk_dir,
                self.owner_tag,
                volumes.sources,
            )
        except KeyError as exc:
            self.statuses.write(
                vm,
                placement,
                VMPhase.FAILED,
                "NetworkNotFound",
                f"network {exc.args[0]!r} does not exist",
            )
            return False
        missing = disks_here(
            self.disks,
            self.driver,
            self.node,
            self.disk_dir if self.shared_disk_dir else None,
            vm,
            spec,
        )
        if missing is not None:
            # Waiting for a node that reaches the disk (or for its creator), not a failure
            # of the VM itself: the scheduler, drain and recovery place it only there.
            self.statuses.write(vm, placement, VMPhase.PENDING, "DiskMissing", missing)
            log.warning("event=disk_missing vm=%s node=%s why=%r", vm.name, self.node, missing)
            return False
        self.driver.define(spec)
        if publish:
            self.consoles.domain_defined(vm.name)
        local.defined_generation = vm.metadata.generation
        self.statuses.set_volumes(vm.name, volumes.statuses)
        log.info(
            "event=domain_defined vm=%s node=%s generation=%s",
            vm.name,
            self.node,
            vm.metadata.generation,
        )
        return True

    def _leave(self, name: str, vm: VirtualMachine | None) -> float | None:
        """Placed elsewhere: move the domain there as the move's method says (departure.py):
        live, or shut the guest down as a stop would (ACPI, then force off at
        shutdownTimeout) before the domain goes; the new node waits for that. Returns the
        requeue delay while moving, None once the domain is off or gone."""
        info = self.driver.info(name)
        if info is None or info.owner_tag != self.owner_tag or info.state not in UP_OR_STOPPING:
            # Gone (a live migration's switch-over undefines it here) or off: let go, once
            # a migration that moved it has ended (its end hands the VM over to its target).
            flight = self.departures.flights.get(name)
            if flight is not None and not flight.done.is_set():
                return 0.1
            self.departures.settle(name)
            return None
        if vm is None:
            # Not cached (a restarted daemon, a spec watch not yet delivered): read it.
            try:
                vm = self.store.get(VirtualMachine, name)
            except NotFound:
                return None  # deleted: nothing to keep, off at once
        elif not self.store.exists(VirtualMachine, name):
            return None
        local = self._local.setdefault(name, LocalState())
        progress = self.driver.migration_progress(name)
        if progress is not None and not progress.outgoing:
            # Another node's live migration to here, placed elsewhere since: this copy is
            # arriving, not ours. Its source aborts the job or completes it (then hands it over
            # here, and this node moves it on); a source that dies takes the copy with it.
            self.departures.watch_holders(name)
            return 1.0
        if vm.deleting:
            # Going away: a move under way ends first (the guest stays here), then the guest
            # is shut down here as a stop would.
            if progress is not None and not self.departures.flights.abort(name):
                self.driver.abort_migration(name)
            if progress is not None:
                return 0.5
            return self.power.shut_down(vm, local, "deleting")
        delay, local.move = self.departures.leave(vm, local.move, info.state)
        if delay is not None:
            return delay
        return self.power.shut_down(vm, local, "placed_elsewhere")

    def _delete_here(self, vm: VirtualMachine, placement: Placement) -> float | None:
        """The VM is being deleted (Terminating) and placed here: shut its domain down as a
        Halted stop does (ACPI, then forced off at shutdownTimeout), undefine it, let go of
        it, then remove the pvc.io/domain finalizer, which removes the object when it was
        the last (zkstore/deletion.py). Nothing starts or moves it meanwhile."""
        name = vm.name
        local = self._local.setdefault(name, LocalState())
        progress = self.driver.migration_progress(name)
        if progress is not None and not progress.outgoing:
            # A live migration's copy arriving from its source, not yet ours: the source
            # ends the move and shuts the guest down there (_leave).
            self.departures.watch_holders(name)
            return 1.0
        # A live migration away from here (placed back here since, or followed after a
        # restart) ends first: aborted, or, if it completed, its end makes the target a
        # holder again (departures._pop_done), so the object waits for the target's copy.
        flying, _ = self.departures.settle(name, look=True)
        if flying:
            return 0.5
        info = self.driver.info(name)
        if info is not None and info.owner_tag == self.owner_tag:
            if info.state in UP_OR_STOPPING:
                again = self.power.shut_down(vm, local, "deleting")
                if again is not None:
                    self.statuses.write(
                        vm,
                        placement,
                        VMPhase.TERMINATING,
                        "Deleting",
                        f"shutting the guest down before the VM is deleted (forced off "
                        f"after {vm.spec.shutdown_timeout})",
                    )
                    return again
            self._remove_domain(name, "the VM is being deleted")
        again = self.claims.release(name)  # with this node's records of a move, if any
        if again is not None:
            return again
        others = sorted(self.departures.read_holders(name))  # their release wakes it
        if others:  # another node holds it still (a move's target): its release wakes us
            self.statuses.write(
                vm,
                placement,
                VMPhase.TERMINATING,
                "Deleting",
                f"its domain is gone from {self.node}; waiting for {', '.join(others)}",
            )
            local.holder_waits += 1
            return min(0.1 * 2.0 ** min(local.holder_waits, 8), 30.0)
        log.info("event=deletion_finalized vm=%s by=%s", name, self.node)
        Deletions(self.store, self.events, self.node).finalize(
            VirtualMachine, name, verbs.DOMAIN_FINALIZER
        )
        return None

    def _remove_domain(self, name: str, why: str | None = None) -> None:
        """Undefine ``name``'s domain here (off: checked by the caller); a deleted VM's
        console and XML go too."""
        info = self.driver.info(name)
        if info is None or info.owner_tag != self.owner_tag:
            if not self.store.exists(VirtualMachine, name):
                self.consoles.forget(name)
            return  # absent, or not PVC's to remove
        self.driver.undefine(name)
        self._on_domains_changed()
        log.info("event=domain_removed vm=%s node=%s reason=not_placed_here", name, self.node)
        why = why or self._why_removed(name)
        self.vm_events.record(
            name, "DomainRemoved", f"its domain is removed from {self.node}: {why}"
        )

    def _why_removed(self, name: str) -> str:
        if not self.store.exists(VirtualMachine, name):
            self.consoles.forget(name)
            return "no VM has this name now (deleted or renamed)"
        if (placed := self.store.read_placement(name)) is not None and placed.node:
            return f"placed on {placed.node}"
        return "placed on no node"

    def _network(self, name: str) -> Network | None:
        try:
            return self.store.get(Network, name)
        except NotFound:
            return None

    # -- accounting for the node's heartbeat ---------------------------------

    def allocations(self) -> tuple[int, int, int, int]:
        """(memory allocated, memory provisioned, vCPUs allocated, running VMs) on this node."""
        with self._lock:
            specs = [s for n, s in self._specs.items() if s is not None and n in self._watched]
        return allocations_of(specs)
