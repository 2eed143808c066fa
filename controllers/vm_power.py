"""Powering a VM's domain off on this node: the graceful stop (ACPI, then force off at
``shutdownTimeout``) that a stop, a restart and a move away share, and the Halted
runStrategy's reconcile.

Everything here waits by returning a requeue delay, never by blocking (see
vm_controller.py).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from controllers.live_migration import MoveOut
from controllers.vm_status import StatusWriter
from hypervisor import DomainDriver, DomainState
from schemas import Placement, VirtualMachine, VirtualMachineStatus, VMPhase, to_seconds, verbs
from zkstore.events import EventLog

log = logging.getLogger(__name__)

UP = (DomainState.RUNNING, DomainState.PAUSED)
UP_OR_STOPPING = (*UP, DomainState.SHUTTING_DOWN)


@dataclass
class LocalState:
    """What this daemon remembers of one VM between reconciles (lost on restart, by design:
    everything that must survive a restart is in the VM's status)."""

    defined_generation: int | None = None
    started_at: float | None = None
    stop_deadline: float | None = None
    next_start_at: float | None = None
    forced_off: bool = False
    stop_requested: bool = False
    """This daemon sent the ACPI shutdown (a stop, a move away): the guest going off is no
    crash."""
    holder_waits: int = 0
    """Looks in a row at a holder set with other nodes in it (the back-off)."""
    spec_waits: int = 0
    """Looks in a row for a spec that was not there or not readable (the back-off)."""
    move: MoveOut | None = None
    """The move away from this node under way (placed elsewhere, the domain still here)."""


class VMEvents:
    """The events a node records of its VMs, each naming the node as its source."""

    def __init__(self, events: EventLog, node: str) -> None:
        self._events = events
        self._node = node

    def record(self, name: str, reason: str, message: str, *, warning: bool = False) -> None:
        self._events.record(
            VirtualMachine.KIND,
            name,
            reason,
            message,
            type_="Warning" if warning else "Normal",
            source=self._node,
        )


class Power:
    """Stops a VM's domain on one node (one object per VMController)."""

    def __init__(
        self,
        driver: DomainDriver,
        node: str,
        statuses: StatusWriter,
        events: VMEvents,
        on_domains_changed: Callable[[], None],
    ) -> None:
        self.driver = driver
        self.node = node
        self.statuses = statuses
        self.events = events
        self._on_domains_changed = on_domains_changed

    def halt(
        self,
        vm: VirtualMachine,
        placement: Placement,
        local: LocalState,
        status: VirtualMachineStatus,
    ) -> float | None:
        """runStrategy Halted: off (forced at once on a pvc.io/force-stop), and say how."""
        name = vm.name
        local.next_start_at = None
        force = vm.metadata.annotations.get(verbs.FORCE_STOP)
        force_pending = force is not None and force != status.force_stop_handled
        state = self.driver.state(name)
        if force_pending and state in UP_OR_STOPPING:
            self.driver.destroy(name)
            local.started_at = local.stop_deadline = None
            self._on_domains_changed()
            log.info("event=domain_forced_off vm=%s node=%s reason=force_stop", name, self.node)
            self.events.record(name, "ForceStopped", f"forced off on {self.node} on request")
            self.statuses.write(
                vm,
                placement,
                VMPhase.STOPPED,
                "ForceStopped",
                "forced off on request",
                force_stop_handled=force,
                failures=0,
            )
            return None
        stopping = state in UP_OR_STOPPING or local.stop_deadline is not None
        again = self.stop_gracefully(vm, placement, local, state, "ShuttingDown")
        if again is not None:
            return again
        if stopping and not local.forced_off:  # forced off: shut_down told it
            self.events.record(name, "Stopped", f"shut down on {self.node} (runStrategy Halted)")
        extra: dict[str, Any] = {"failures": 0}
        if force_pending:
            extra["force_stop_handled"] = force
        if local.forced_off:
            reason = "ForcedOff"
        elif status.reason in ("ForceStopped", "ForcedOff"):
            reason = status.reason  # how it went off stays told after a daemon restart
        else:
            reason = "Halted"
        self.statuses.write(
            vm, placement, VMPhase.STOPPED, reason, "runStrategy is Halted", **extra
        )
        return None

    def stop_gracefully(
        self,
        vm: VirtualMachine,
        placement: Placement,
        local: LocalState,
        state: DomainState,
        reason: str,
    ) -> float | None:
        """ACPI shutdown, then force off at shutdownTimeout. Returns the requeue delay while
        waiting, or None once the domain is off."""
        if state not in UP_OR_STOPPING:
            local.stop_deadline = None
            local.started_at = None
            return None
        again = self.shut_down(vm, local)
        if again is None:
            self.statuses.write(
                vm,
                placement,
                VMPhase.STOPPED,
                "ForcedOff",
                f"the guest did not shut down within {vm.spec.shutdown_timeout}",
            )
            return None
        self.statuses.write(
            vm,
            placement,
            VMPhase.STOPPING,
            reason,
            f"waiting up to {vm.spec.shutdown_timeout} for the guest to shut down",
        )
        return again

    def shut_down(
        self, vm: VirtualMachine, local: LocalState, why: str | None = None
    ) -> float | None:
        """ACPI shutdown, then force off at shutdownTimeout: the seconds until the deadline
        check while the guest may still shut itself down, or None once it was forced off."""
        name = vm.name
        now = time.monotonic()
        if local.stop_deadline is None:
            self.driver.shutdown(name)  # a refusal (a migration job) is retried: no deadline yet
            local.stop_deadline = now + to_seconds(vm.spec.shutdown_timeout)
            log.info(
                "event=domain_shutdown vm=%s node=%s reason=%s timeout=%s",
                name,
                self.node,
                why or "stop",
                vm.spec.shutdown_timeout,
            )
        local.stop_requested = True
        if now < local.stop_deadline:
            # The stop event requeues at once; this is the deadline check.
            return min(5.0, local.stop_deadline - now)
        self.driver.destroy(name)
        local.stop_deadline = None
        local.started_at = None
        local.forced_off = True
        self._on_domains_changed()
        log.warning(
            "event=domain_forced_off vm=%s node=%s reason=%s",
            name,
            self.node,
            f"{why}_shutdown_timeout" if why else "shutdown_timeout",
        )
        self.events.record(
            name,
            "ForcedOff",
            f"the guest on {self.node} did not shut down within {vm.spec.shutdown_timeout}: "
            "forced off",
            warning=True,
        )
        return None
