"""The source side of live migrations on one node: one thread per migration in flight.

libvirt's migrate call blocks for the whole migration (seconds, or minutes for a busy
guest), so it runs in a thread of its own, never in a reconcile worker; the VM's
reconcile looks at it (progress, outcome) and aborts it when the VM is placed back
here. The thread only calls the driver and wakes the reconcile when done: every
decision (retry, fall back, release the holder) is the reconcile's.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from controllers import metrics
from hypervisor import DomainDriver, HypervisorError, MigrationTarget
from schemas import MigrationMethod

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 3
"""Live-migration attempts of one move before it is given up (``auto`` then moves it cold)."""

RETRY_BASE = 2.0
"""Seconds before the second attempt; doubled for each further one."""

CLAIM_TIMEOUT = 30.0
"""How long the source waits for the target to claim the VM (docs/ha.md) per attempt."""


@dataclass
class MoveOut:
    """What the source decided so far about moving one VM away (lost on restart: a restarted
    daemon starts the move afresh, which libvirt makes safe)."""

    target: str
    version: int
    """The placement record's version this move carries out (a new write: a new move)."""
    method: MigrationMethod
    forced: bool
    """Live only (``vm migrate --live``): never a shutdown move."""
    started: str
    since: float = field(default_factory=time.monotonic)
    """When this attempt began waiting (for the target's claim)."""
    attempts: int = 0
    last_error: str | None = None
    next_attempt_at: float = 0.0
    cold: bool = False
    """Decided: a shutdown move."""
    failed: bool = False
    """Given up, no fallback: the VM stays here until the primary places it back."""
    failed_message: str = ""
    fallback_by: float | None = None
    """Live migration failed MAX_ATTEMPTS times: a shutdown move once the target heartbeats
    (alive: it is live migration that fails, not the target), by this monotonic deadline;
    the target marked not ready, or silent until then, and the move is given up instead."""
    target_beat: str | None = None
    """The target's last heartbeat as the last attempt failed."""


@dataclass
class Outgoing:
    name: str
    target: MigrationTarget
    started_at: float = field(default_factory=time.monotonic)
    done: threading.Event = field(default_factory=threading.Event)
    error: HypervisorError | None = None


class OutgoingMigrations:
    def __init__(self, driver: DomainDriver, node: str, wake: Callable[[str], None]) -> None:
        self.driver = driver
        self.node = node
        self._wake = wake
        self._lock = threading.Lock()
        self._flights: dict[str, Outgoing] = {}

    def get(self, name: str) -> Outgoing | None:
        with self._lock:
            return self._flights.get(name)

    def pop(self, name: str) -> Outgoing | None:
        """Forget a finished migration (one still running stays)."""
        with self._lock:
            flight = self._flights.get(name)
            if flight is None or not flight.done.is_set():
                return None
            return self._flights.pop(name)

    def begin(self, name: str, target: MigrationTarget, max_downtime_ms: int) -> Outgoing:
        flight = self._register(name, target)
        log.info(
            "event=migration_started vm=%s source=%s target=%s uri=%s address=%s",
            name,
            self.node,
            target.node,
            target.uri,
            target.address or "-",
        )
        threading.Thread(
            target=self._run,
            args=(flight, max_downtime_ms),
            name=f"migrate-{name}",
            daemon=True,
        ).start()
        return flight

    def follow(self, name: str, target: MigrationTarget) -> Outgoing:
        """Track a migration job of ``name`` that libvirt already runs (begun before this
        daemon restarted) until it ends: it moved the domain when the domain is gone from
        here then."""
        flight = self._register(name, target)
        threading.Thread(
            target=self._follow, args=(flight,), name=f"follow-{name}", daemon=True
        ).start()
        return flight

    def abort(self, name: str) -> bool:
        """Ask libvirt to abort the migration of ``name``; True when one was running."""
        flight = self.get(name)
        if flight is None or flight.done.is_set():
            return False
        try:
            aborted = self.driver.abort_migration(name)
        except HypervisorError as exc:
            log.warning("event=migration_abort_failed vm=%s error=%s", name, exc)
            return True
        log.info("event=migration_abort vm=%s target=%s sent=%s", name, flight.target.node, aborted)
        return True

    def wait_all(self, timeout: float) -> bool:
        """Wait for every migration in flight to end (an orderly stop); False at the deadline."""
        deadline = time.monotonic() + timeout
        with self._lock:
            flights = list(self._flights.values())
        return all(flight.done.wait(max(0.0, deadline - time.monotonic())) for flight in flights)

    def _register(self, name: str, target: MigrationTarget) -> Outgoing:
        flight = Outgoing(name, target)
        with self._lock:
            if name in self._flights:
                raise RuntimeError(f"a migration of {name!r} is already under way")
            self._flights[name] = flight
        return flight

    def _follow(self, flight: Outgoing) -> None:
        delay = 0.1
        try:
            while self.driver.migration_progress(flight.name) is not None:
                time.sleep(delay)  # libvirt tells no end of another client's job: poll it
                delay = min(delay * 2, 1.0)
            if self.driver.info(flight.name) is not None:
                flight.error = HypervisorError(
                    f"the migration of {flight.name!r} under way when this daemon started "
                    "ended with the domain still here"
                )
        except HypervisorError as exc:
            flight.error = exc
        except Exception as exc:
            flight.error = HypervisorError(f"follow the migration of {flight.name!r}: {exc!r}")
            log.exception("event=migration_follow_crashed vm=%s", flight.name)
        finally:
            log.info(
                "event=migration_follow_done vm=%s moved=%s", flight.name, flight.error is None
            )
            flight.done.set()
            self._wake(flight.name)

    def _run(self, flight: Outgoing, max_downtime_ms: int) -> None:
        try:
            self.driver.migrate(flight.name, flight.target, max_downtime_ms=max_downtime_ms)
        except HypervisorError as exc:
            flight.error = exc
            metrics.count_migration("live", "failed")
            log.warning(
                "event=migration_failed vm=%s source=%s target=%s seconds=%.2f error=%s",
                flight.name,
                self.node,
                flight.target.node,
                time.monotonic() - flight.started_at,
                exc,
            )
        except Exception as exc:  # a driver bug must not leave the reconcile waiting forever
            flight.error = HypervisorError(f"migrate domain {flight.name!r}: {exc!r}")
            metrics.count_migration("live", "failed")
            log.exception("event=migration_crashed vm=%s", flight.name)
        else:
            metrics.count_migration("live", "succeeded")
            log.info(
                "event=migration_done vm=%s source=%s target=%s seconds=%.2f",
                flight.name,
                self.node,
                flight.target.node,
                time.monotonic() - flight.started_at,
            )
        finally:
            flight.done.set()
            self._wake(flight.name)
