"""The source side of a move: a VM placed on another node while its domain runs here.

A move goes as the placement's ``method`` says, else the VM's
``spec.migration.method``:

- ``shutdown``: shut the guest down (ACPI, then force off at shutdownTimeout); the
  target starts it once this node has let go (docs/ha.md).
- ``live``: once the target has claimed the VM (so both nodes hold it), libvirt
  migrates it peer to peer; this node lets go only when its domain is gone. Failed
  attempts are retried (MAX_ATTEMPTS); then the VM keeps running here, its status
  says Failed, and the primary places it back here. Never a shutdown.
- ``auto``: live, and when live migration fails (or this hypervisor cannot), a
  shutdown move with an event saying why. A target that is not ready is no reason to
  shut a guest down: then ``auto`` fails as ``live`` does; nor is one that went silent as
  the attempts failed (it lost power): the shutdown move waits for a heartbeat of the
  target's after the last failure (``_confirm_fallback``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from controllers import metrics
from controllers.live_migration import (
    CLAIM_TIMEOUT,
    MAX_ATTEMPTS,
    RETRY_BASE,
    MoveOut,
    Outgoing,
    OutgoingMigrations,
)
from controllers.vm_status import StatusWriter
from hypervisor import (
    DomainDriver,
    DomainNotFound,
    DomainState,
    HypervisorError,
    HypervisorUnavailable,
    MigrationTarget,
    MigrationUnsupported,
)
from schemas import (
    CLUSTER_NAME,
    Cluster,
    ClusterSpec,
    MigrationMethod,
    MigrationState,
    MigrationStatus,
    Node,
    NodeStatus,
    Placement,
    VirtualMachine,
    VMPhase,
    to_seconds,
    utcnow,
)
from zkstore import Holders, NotFound, Store, paths
from zkstore.events import EventLog
from zkstore.moves import node_live_problem, node_status_live_problem, unreached_disks

R = TypeVar("R")
Watch = Callable[[Any], None]
"""A ZooKeeper watch callback (it gets the WatchedEvent)."""

log = logging.getLogger(__name__)

PROGRESS_EVERY = 1.0
"""Seconds between looks at a live migration's progress (and writes of it to status)."""


class Departures:
    """Decides and carries out the moves away from one node (one object per VMController)."""

    def __init__(
        self,
        store: Store,
        driver: DomainDriver,
        node: str,
        holders: Holders,
        statuses: StatusWriter,
        wake: Callable[[str], None],
    ) -> None:
        self.store = store
        self.driver = driver
        self.node = node
        self.holders = holders
        self.statuses = statuses
        self.events = EventLog(store)
        self._wake = wake
        self.flights = OutgoingMigrations(driver, node, wake)
        self._watching: set[str] = set()
        self._unknown: set[str] = set()  # VMs whose record's making may have half-failed
        self._lock = threading.Lock()

    def leave(
        self, vm: VirtualMachine, move: MoveOut | None, state: DomainState
    ) -> tuple[float | None, MoveOut | None]:
        """One look at a VM placed elsewhere whose domain is up here. Returns (the requeue
        delay, the move's memory); a delay of None means: move it cold (shut it down)."""
        name = vm.name
        placement, version = self.store.read_placement_versioned(name)
        target = placement.node if placement is not None else None
        method = (placement.method if placement else None) or vm.spec.migration.method
        if target == self.node:
            # Placed here since the reconcile read its cache (a recovery or a move back
            # landed between its reads): nothing leaves; the next look runs it here.
            return 0.1, move
        if target is None or method == MigrationMethod.SHUTDOWN:
            return self._cold_unless_flying(name), None
        if move is None or move.target != target or move.version != version:
            move = MoveOut(
                target=target,
                version=version,
                method=method,
                forced=placement is not None and placement.method == MigrationMethod.LIVE,
                started=utcnow(),
            )
        flight = self.flights.get(name)
        if flight is None:
            flight = self._follow_job(name)
        if flight is not None and flight.target.node != target:
            if not flight.done.is_set():
                # Placed on a third node meanwhile: end this one first, then go there.
                self.flights.abort(name)
                return 0.5, move
            if not self._pop_done(name):
                return 0.5, move  # libvirt still runs the job: followed now
            if flight.error is None:
                return 0.1, move  # it moved: the next look finds the domain gone
            flight = None
        if move.cold:
            return self._cold_unless_flying(name), move
        if move.failed:
            # The primary places it back here; until then the Failed report stands (again,
            # should a write of the target's have come in between).
            self._report(vm, placement, move, MigrationState.FAILED, move.failed_message)
            return 5.0, move
        if flight is not None:
            if not flight.done.is_set():
                self._report(vm, placement, move, MigrationState.RUNNING, "migrating")
                return PROGRESS_EVERY, move
            if not self._pop_done(name):
                return PROGRESS_EVERY, move  # libvirt still runs the job: followed now
            if flight.error is None:
                return 0.1, move  # gone from here: the next look finds the domain absent
            return self._attempt_failed(vm, placement, move, flight.error), move
        if state == DomainState.SHUTTING_DOWN:
            return None, move  # going off anyway (the guest, or a shutdown move begun)
        if move.fallback_by is not None:
            return self._confirm_fallback(vm, placement, move), move
        now = time.monotonic()
        if now < move.next_attempt_at:
            return move.next_attempt_at - now, move
        problem, permanent = self._problem(vm, target)
        if problem is not None:
            move.last_error = problem
            return self._give_up(vm, placement, move, fallback=permanent), move
        if target not in self.read_holders(name):  # the target's claim wakes us
            if now - move.since > CLAIM_TIMEOUT:
                error = HypervisorError(f"node {target} did not claim {name} in {CLAIM_TIMEOUT:g}s")
                move.attempts += 1  # an attempt that never began: a target that never claims
                if move.attempts >= MAX_ATTEMPTS:
                    # ...would not start it after a shutdown either: no fallback.
                    move.last_error = str(error)
                    return self._give_up(vm, placement, move, fallback=False), move
                return self._attempt_failed(vm, placement, move, error), move
            self._report(
                vm, placement, move, MigrationState.WAITING, f"waiting for {target} to claim it"
            )
            return 1.0, move
        node = self.store.get(Node, target)
        status = node.status
        assert status is not None and status.migration_uri is not None  # checked by _problem
        destination = MigrationTarget(target, status.migration_uri, status.migration_address)
        # Where it goes, on this node's holder entry, before libvirt starts: a daemon that
        # restarts meanwhile finds the job and follows it there (_follow_job), or learns
        # that it ended (settle_unseen). Its mark on the target's entry keeps the target
        # holding the VM until this node knows how the job ended.
        with self._lock:
            self._unknown.add(name)  # kept if the write raises: its outcome is unknown
        recorded = self.holders.set_migrating(name, self.node, target)
        with self._lock:
            self._unknown.discard(name)
        if not recorded:
            return 1.0, move  # the target let go since it claimed: its next claim wakes us
        move.attempts += 1  # counted once begun: a target that let go cost no attempt
        self.flights.begin(
            name,
            destination,
            max_downtime_ms=max(1, round(to_seconds(vm.spec.migration.max_downtime) * 1000)),
        )
        self._report(vm, placement, move, MigrationState.RUNNING, "migrating")
        return PROGRESS_EVERY, move

    def settle(self, name: str, *, look: bool = False) -> tuple[bool, bool]:
        """The VM is placed here again, or its domain is gone from here: abort an outgoing
        migration (with ``look``, also one libvirt runs that this daemon did not start: it
        restarted meanwhile). Returns (still flying: look again shortly, migrated away: the
        domain left this host on purpose)."""
        flight = self.flights.get(name)
        if flight is None and look:
            flight = self._follow_job(name)
        if flight is None:
            self._settle_unknown(name)
            return False, False
        if not flight.done.is_set():
            self.flights.abort(name)
            return True, False
        if not self._pop_done(name):
            return True, False
        return False, flight.error is None

    def settle_unseen(self, name: str) -> bool:
        """After this daemon restarted, with no job of ``name`` running (``settle`` found
        none): a live migration it had begun may have ended while it was down, unseen. Its
        record (``set_migrating``) says where it went; the target has held the VM since
        before the job began (the record's mark keeps it from letting go), so this node
        starts nothing while the guest may run there. The domain gone from here (the
        switch-over undefines it on the source; a failed job leaves it defined) says the
        job completed. The record goes, and with it the mark: the target lets go once its
        copy, if any, is gone. Returns whether the domain left this host."""
        target = self.holders.migrating_to(name, self.node)
        if target is None:
            return False
        moved = self.driver.info(name) is None
        if moved and self.store.exists(VirtualMachine, name):
            log.warning(
                "event=migration_ended_unseen vm=%s source=%s target=%s",
                name,
                self.node,
                target,
            )
            self.events.record(
                VirtualMachine.KIND,
                name,
                "Migrated",
                f"live-migrated from {self.node} to {target} while pvcnoded on {self.node} "
                f"was down: it runs on {target} until moved back",
                source=self.node,
            )
        self.holders.set_migrating(name, self.node, None)
        return moved

    # -- decisions -------------------------------------------------------------------

    def _pop_done(self, name: str) -> bool:
        """Forget a finished migration and clear its record (with the mark that kept its
        target holding the VM: the target has held it throughout, so a move that landed
        there is held by the node that runs it). A call that failed while libvirt still
        runs the job (the connection to libvirtd was lost, and libvirtd went on) is not
        an end: the job is followed from here, the record kept. False then."""
        flight = self.flights.get(name)
        if flight is None or not flight.done.is_set():
            return True
        if flight.error is not None:
            progress = self.driver.migration_progress(name)  # unreachable: raises, retried
            if progress is not None and progress.outgoing:
                self.flights.pop(name)
                log.warning(
                    "event=migration_still_running vm=%s source=%s target=%s error=%s",
                    name,
                    self.node,
                    flight.target.node,
                    flight.error,
                )
                self.flights.follow(name, flight.target)
                return False
        moved = flight.error is None or (
            # The connection was lost: libvirtd went on; the domain gone from here says moved.
            isinstance(flight.error, HypervisorUnavailable) and self.driver.info(name) is None
        )
        if moved and self.store.exists(VirtualMachine, name):
            self.events.record(
                VirtualMachine.KIND,
                name,
                "Migrated",
                f"live-migrated from {self.node} to {flight.target.node}",
                source=self.node,
            )
        self.holders.set_migrating(name, self.node, None)
        self.flights.pop(name)
        return True

    def _settle_unknown(self, name: str) -> None:
        """A record whose making failed with an unknown outcome (the connection was lost
        as it committed), no job begun: cleared once the VM is placed here again."""
        with self._lock:
            unknown = name in self._unknown
        if unknown:
            self.holders.set_migrating(name, self.node, None)
            with self._lock:
                self._unknown.discard(name)

    def _follow_job(self, name: str) -> Outgoing | None:
        """An outgoing migration job libvirt runs that this daemon did not start (begun before
        it restarted): followed to its end when its target is known (recorded before it
        began), else aborted: a guest never lands where nobody knows to hand it over."""
        progress = self.driver.migration_progress(name)
        if progress is None or not progress.outgoing:
            return None
        target = self.holders.migrating_to(name, self.node)
        if target is None:
            log.warning("event=migration_unknown_aborted vm=%s source=%s", name, self.node)
            self.driver.abort_migration(name)
            return None
        log.info("event=migration_followed vm=%s source=%s target=%s", name, self.node, target)
        return self.flights.follow(name, MigrationTarget(target, "", None))

    def _cold_unless_flying(self, name: str) -> float | None:
        flight = self.flights.get(name)
        if flight is not None and not flight.done.is_set():
            self.flights.abort(name)  # a shutdown waits for the migration to end first
            return 0.5
        if not self._pop_done(name):
            return 0.5
        return None

    def _problem(self, vm: VirtualMachine, target: str) -> tuple[str | None, bool]:
        """Why a live migration to ``target`` cannot begin now, and whether that is about live
        migration itself (``auto`` may then move it cold) rather than about the target."""
        mine = self.driver.live_migration_problem()
        if mine is not None:
            return f"node {self.node} cannot live-migrate: {mine}", True
        problem, permanent = node_live_problem(self.store, target, target=True)
        if problem is not None:
            return problem, permanent
        return unreached_disks(self.store, vm, target), False

    def _attempt_failed(
        self, vm: VirtualMachine, placement: Placement | None, move: MoveOut, error: Exception
    ) -> float | None:
        move.last_error = str(error)
        move.attempts = max(move.attempts, 1)
        move.since = time.monotonic()
        if isinstance(error, MigrationUnsupported) or (
            # Not defined here (any more): nothing to migrate live. A "no domain" that came
            # from the target's side, the guest still here, is an attempt like any other.
            isinstance(error, DomainNotFound) and self.driver.info(vm.name) is None
        ):
            return self._give_up(vm, placement, move, fallback=True)
        problem, permanent = self._problem(vm, move.target)
        if problem is not None and not permanent:
            move.last_error = f"{error}; {problem}"
            return self._give_up(vm, placement, move, fallback=False)
        if move.attempts >= MAX_ATTEMPTS:
            if move.method != MigrationMethod.AUTO or move.forced:
                return self._give_up(vm, placement, move, fallback=False)
            move.target_beat = self._heartbeat_of(move.target)
            move.fallback_by = time.monotonic() + self._fallback_wait()
            return self._confirm_fallback(vm, placement, move)
        delay = RETRY_BASE * 2.0 ** (move.attempts - 1)
        move.next_attempt_at = time.monotonic() + delay
        move.since = move.next_attempt_at
        self._report(
            vm,
            placement,
            move,
            MigrationState.WAITING,
            f"attempt {move.attempts} failed; trying again in {delay:g}s",
        )
        return delay

    def _confirm_fallback(
        self, vm: VirtualMachine, placement: Placement | None, move: MoveOut
    ) -> float | None:
        """Live migration failed MAX_ATTEMPTS times. Attempts fail the same way when the
        target lost power, and its status says Ready until the primary finds it silent: a
        shutdown move then would stop a guest that nothing can start there (the fence's
        recovery starts it again, after an outage the failed move caused). So the fallback
        waits for a status of the target's, written after the last failure, that says it
        is up and ready (it is live migration that fails); the target not ready, or silent
        until ``fallback_by``, and the move is given up instead, the guest running on here.
        One read of the status for both looks: a heartbeat saying its hypervisor is down
        is a new heartbeat too."""
        assert move.fallback_by is not None
        problem: str | None
        try:
            status = self.store.get(Node, move.target).status
        except NotFound:
            status, problem, permanent = None, f"node {move.target} does not exist", False
        else:
            problem, permanent = node_status_live_problem(move.target, status, target=True)
        if problem is not None and not permanent:
            move.fallback_by = None
            move.last_error = f"{move.last_error}; {problem}"
            return self._give_up(vm, placement, move, fallback=False)
        if _heartbeat(status) != move.target_beat:
            move.fallback_by = None
            return self._give_up(vm, placement, move, fallback=True)
        if time.monotonic() >= move.fallback_by:
            move.fallback_by = None
            move.last_error = f"{move.last_error}; node {move.target} sent no heartbeat since"
            return self._give_up(vm, placement, move, fallback=False)
        self._report(
            vm,
            placement,
            move,
            MigrationState.WAITING,
            f"attempt {move.attempts} failed; before any shutdown move, waiting for a "
            f"heartbeat of {move.target} (is it up?)",
        )
        return 1.0

    def _heartbeat_of(self, node: str) -> str | None:
        """``node``'s last heartbeat (None: none, or no such node)."""
        try:
            return _heartbeat(self.store.get(Node, node).status)
        except NotFound:
            return None

    def _fallback_wait(self) -> float:
        """How long a fallback waits for a heartbeat of the target's: three of the cluster's
        keepalive intervals (a node up heartbeats once each), CLAIM_TIMEOUT at least."""
        try:
            spec = self.store.get(Cluster, CLUSTER_NAME).spec
        except NotFound:
            spec = ClusterSpec()
        return max(CLAIM_TIMEOUT, 3 * to_seconds(spec.fencing.keepalive_interval))

    def _give_up(
        self, vm: VirtualMachine, placement: Placement | None, move: MoveOut, *, fallback: bool
    ) -> float | None:
        name = vm.name
        tried = f"after {move.attempts} attempt(s)" if move.attempts else "before any attempt"
        if fallback and move.method == MigrationMethod.AUTO and not move.forced:
            move.cold = True
            message = (
                f"live migration to {move.target} failed {tried}: {move.last_error}; "
                f"moving it with a shutdown instead (spec.migration.method auto)"
            )
            log.warning(
                "event=migration_fallback vm=%s target=%s why=%r", name, move.target, message
            )
            metrics.count_migration("live", "fell_back")
            self.events.record(
                VirtualMachine.KIND,
                name,
                "MigrationFallback",
                message,
                type_="Warning",
                source=self.node,
            )
            self._report(vm, placement, move, MigrationState.FALLING_BACK, message)
            return None
        move.failed = True
        if move.forced:
            why = "forced live"
        elif move.method == MigrationMethod.AUTO:
            why = "spec.migration.method auto, but the target is not available"
        else:
            why = f"spec.migration.method {move.method.value}"
        message = (
            f"live migration to {move.target} failed {tried}: {move.last_error}; it keeps "
            f"running on {self.node} ({why}: no shutdown move)"
        )
        move.failed_message = message
        log.warning("event=migration_given_up vm=%s target=%s why=%r", name, move.target, message)
        metrics.count_migration("live", "given_up")
        self.events.record(
            VirtualMachine.KIND, name, "MigrationFailed", message, type_="Warning", source=self.node
        )
        self._report(vm, placement, move, MigrationState.FAILED, message)
        return 5.0

    # -- status ------------------------------------------------------------------------

    def _report(
        self,
        vm: VirtualMachine,
        placement: Placement | None,
        move: MoveOut,
        state: MigrationState,
        message: str,
    ) -> None:
        progress = None
        if state == MigrationState.RUNNING:
            try:
                progress = self.driver.migration_progress(vm.name)
            except HypervisorError as exc:
                log.debug("event=migration_progress_unavailable vm=%s error=%s", vm.name, exc)
        record = MigrationStatus(
            source=self.node,
            target=move.target,
            method=MigrationMethod.LIVE if move.forced else move.method,
            state=state,
            started=move.started,
            attempts=move.attempts,
            data_total=progress.data_total if progress else None,
            data_remaining=progress.data_remaining if progress else None,
            last_error=move.last_error,
            placement_version=move.version,
        )
        failed = state == MigrationState.FAILED
        self.statuses.write(
            vm,
            placement or Placement(node=move.target),
            VMPhase.RUNNING if failed else VMPhase.MIGRATING,
            "MigrationFailed" if failed else "Migrating",
            message if failed else f"{message}: {self.node} -> {move.target}",
            migration=record,
        )

    def holders_watcher(self, name: str) -> Watch | None:
        """The watch that wakes ``name``'s reconcile when its holder set changes (once per
        change), for the caller's next read of the set to set; None when one is set already.
        When that read sets none (no set, or it failed), call ``holders_unwatched``."""
        with self._lock:
            if name in self._watching:
                return None
            self._watching.add(name)

        def fired(_event: object) -> None:
            with self._lock:
                self._watching.discard(name)
            self._wake(name)

        return fired

    def holders_unwatched(self, name: str) -> None:
        with self._lock:
            self._watching.discard(name)

    def read_watched(
        self, name: str, read: Callable[[Watch | None], R], held: Callable[[R], frozenset[str]]
    ) -> R:
        """``read(watch)``: a synced read of ``name``'s holder set that carries the watch
        waking its reconcile when the set changes (None when one is set already), so a
        change after the read fires it and one before shows in it. ``held`` gives the
        holders ``read`` found: none may mean no set, so maybe no watch, and the mark goes
        (as after a failed read), so the next read sets one."""
        watch = self.holders_watcher(name)
        try:
            result = read(watch)
        except BaseException:
            if watch is not None:
                self.holders_unwatched(name)
            raise
        if watch is not None and not held(result):
            self.holders_unwatched(name)
        return result

    def read_holders(self, name: str) -> frozenset[str]:
        """``name``'s holders now (synced), with the watch that wakes it when they change."""
        return self.read_watched(name, lambda w: self.holders.read(name, watch=w), lambda h: h)

    def watch_holders(self, name: str) -> None:
        """Wake the VM's reconcile when its holder set changes (once per change)."""
        watch = self.holders_watcher(name)
        if watch is None:
            return

        def answered(result: Any) -> None:
            try:
                result.get()
            except Exception:  # NoNodeError (no set: no watch), or a lost connection
                self.holders_unwatched(name)

        # Not waited for: ZooKeeper answers one session's requests in order, so a read sent
        # after this one is served after the watch is set (no round trip of its own).
        self.store.client.get_children_async(
            self.store.path(paths.holders(name)), watch=watch
        ).rawlink(answered)


def _heartbeat(status: NodeStatus | None) -> str | None:
    return status.last_heartbeat if status is not None else None
