"""A fault-injecting hypervisor for tests, chaos trials and benchmarks.

libvirt's test driver starts and stops domains at once, so the races a real
QEMU opens (a start takes ~0.6 s, a destroy 1-2 s, a guest may ignore ACPI
for minutes) never show against it. FaultyDriver wraps a real LibvirtDriver
on a node's test:/// host file (define() still validates the XML) and adds
durations (Timings) and faults driven through the HypervisorWorld: crash,
pause/resume, cut (the node's daemon lost its hypervisor connection) and
power off/on (every domain on the host gone at once; it comes back empty).
It live-migrates between its hosts as libvirt does (faulty_migration.py).

HypervisorWorld records every transition of every simulated host under one
lock; a VM becoming held on a node while another node holds it is a
Violation, recorded at that instant and logged at ERROR as
``event=one_copy_violation``. A test asserts the one-copy rule from what the
hypervisors hold, never from status fields or heartbeats::

    world = HypervisorWorld(Timings(start=0.6, shutdown=5.0, destroy=1.5))
    driver = world.driver("hv1", write_test_host_xml(tmp / "hv1.xml", 8192, 4))
    fence_agent = world.agent("hv1")   # the simulated host's power switch
    ...
    assert world.violations == [], world.format_transitions()

Details a harness relies on:

- The world lock is held to check and record a transition (and for the test
  driver's sub-millisecond calls that must agree with it), never across a
  duration: durations are waits that a destroy, crash or power loss cuts short.
- A start under way ends, the domain gone, with HypervisorUnavailable when its
  host loses power, with OperationFailed when it is destroyed or crashes. A
  start() of a domain that is starting or being destroyed waits for that
  first; of a running, paused or shutting down one it is a no-op. shutdown()
  of a domain that is starting, paused or being destroyed is a no-op, and a
  destroy() cancels an ACPI shutdown under way.
- A call under way when its node is cut still takes effect, and start(),
  destroy() and undefine() then raise HypervisorUnavailable: as with a lost
  connection, the caller cannot know the outcome. Lifecycle events are not
  delivered while the node is cut, nor for the domains a power loss ends.
- Several drivers may be made for one node (a restarted daemon): they share
  its host and domains; close() ends one driver, never the host. Power on
  clears a cut (a rebooted host's daemon connects afresh).
- Lifecycle callbacks run on one thread per driver, in order, after every
  transition, define and undefine; libvirt's own events are not used.
- on_power callbacks run in the thread that changed the power (the fence
  agent's caller), after the change, one power change at a time.

Details a harness relies on, for live migration (migrate() on the source S,
MigrationTarget.node naming the target T, whose uri and address are only
recorded):

- From the call T holds an incoming copy, reported PAUSED (state, info and
  list_managed on T show it); S records migrating-out:T, T incoming:S. After
  Timings.migrate seconds (or world.slow_migrations(vm, seconds)), at once
  under the lock: S's copy goes off (off:migrated) and is undefined there,
  stop_reason() on S saying MIGRATED until the name is defined there again;
  T's copy runs and is defined on T with the spec S had. Events on both.
- One-copy rule: an incoming copy beside the running source of its own
  migration is no violation (holders() names both meanwhile); any other
  second holder is, as before.
- It fails with MigrationFailed, the domain running on S as before and
  nothing on T, when: the domain is not running on S (DomainNotFound when
  it is not defined there); T is unknown, off, S itself or already holds the
  vm; abort_migration() on S; T loses power; the incoming copy is destroyed,
  crashed or undefined on T; S's copy is destroyed or crashes (it is then off,
  or going off, on S too); world.fail_migrations(vm, why) planned it (half-way).
- S losing power ends both copies and migrate() raises HypervisorUnavailable;
  so does a cut of S, after the migration ended on its own (either way). A cut
  of T changes nothing. HypervisorWorld(live_migration=False), or
  set_live_migration(node, False), makes migrate() raise MigrationUnsupported
  at once. shutdown() of either copy raises OperationFailed while it runs
  (libvirt's migration job holds the domain); start() of either is a no-op.
- migration_progress() on S: the domain's memory as data_total, falling
  linearly to the switch-over; None when no migration of it runs.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable

from hypervisor.domain import DomainSpec, DomainState, StopReason
from hypervisor.errors import (
    DomainNotFound,
    HypervisorError,
    OperationFailed,
)
from hypervisor.faulty_driver import FaultyDriver, SimulatedPowerAgent
from hypervisor.faulty_migration import Migrations
from hypervisor.faulty_state import (
    NODE_WIDE,
    REPORTED,
    TRANSITION_LOG_SIZE,
    Held,
    Host,
    Phase,
    Timings,
    Transition,
    Violation,
    unavailable,
)
from hypervisor.fence.base import FenceAgent
from hypervisor.libvirt_driver import LibvirtDriver

__all__ = [
    "NODE_WIDE",
    "TRANSITION_LOG_SIZE",
    "FaultyDriver",
    "HypervisorWorld",
    "SimulatedPowerAgent",
    "Timings",
    "Transition",
    "Violation",
]

log = logging.getLogger(__name__)


class HypervisorWorld:
    """The truth of what every simulated host holds, shared by all FaultyDrivers of one process.

    'Held' = the domain is in any state but shut off or absent on that node: starting,
    running, paused, shutting down. Every transition is recorded under one lock; a VM
    becoming held on a node while another node holds it is a Violation, recorded at that
    instant (never sampled).
    """

    def __init__(
        self,
        timings: Timings | None = None,
        *,
        log_size: int = TRANSITION_LOG_SIZE,
        live_migration: bool = True,
    ):
        self.timings = timings or Timings()
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._hosts: dict[str, Host] = {}
        self._held: dict[tuple[str, str], Held] = {}
        self._specs: dict[tuple[str, str], DomainSpec] = {}
        """What each domain is defined as on each node (a migration defines it on its target)."""
        self._stop_reasons: dict[tuple[str, str], StopReason] = {}
        self._ignore_acpi: set[str] = set()
        self._deaf: set[str] = set()
        self._violations: list[Violation] = []
        self._log: collections.deque[Transition] = collections.deque(maxlen=log_size)
        self._retired: list[LibvirtDriver] = []
        self._power_lock = threading.RLock()
        self._power_callbacks: list[Callable[[str, bool], None]] = []
        self._migrations = Migrations(self, live_migration=live_migration)

    # -- the truth -----------------------------------------------------------------------

    def driver(self, node: str, uri: str) -> FaultyDriver:
        """A driver for `node`, whose host is libvirt's test driver on `uri` (a test:///
        host file). Another driver for the same node shares its host and domains."""
        with self._lock:
            host = self._host(node)
            if host.uri is None:
                host.uri = uri
                if host.powered:
                    host.inner = LibvirtDriver(uri)
            elif host.uri != uri:
                raise ValueError(f"node {node} is simulated on {host.uri}, not {uri}")
            driver = FaultyDriver(self, node)
            host.drivers.append(driver)
        return driver

    def holders(self, vm: str) -> set[str]:
        with self._lock:
            return self._holders(vm)

    def held_by(self, node: str) -> set[str]:
        with self._lock:
            return {name for (holder, name) in self._held if holder == node}

    @property
    def violations(self) -> list[Violation]:
        with self._lock:
            return list(self._violations)

    @property
    def transitions(self) -> list[Transition]:
        """The last transitions (TRANSITION_LOG_SIZE by default), oldest first."""
        with self._lock:
            return list(self._log)

    def format_transitions(self, last: int = 200) -> str:
        """The last transitions, one a line, times relative to the first one shown."""
        entries = self.transitions[-last:]
        if not entries:
            return "(no transitions)"
        t0 = entries[0].t
        return "\n".join(f"{e.t - t0:9.3f} {e.node} {e.vm} {e.state}" for e in entries)

    def domain_state(self, node: str, vm: str) -> DomainState | None:
        """What `node` holds of `vm` as a driver reports it; None when not held."""
        with self._lock:
            held = self._held.get((node, vm))
            return None if held is None else REPORTED[held.phase]

    # -- faults --------------------------------------------------------------------------

    def ignore_acpi(self, vm: str, ignore: bool = True) -> None:
        """That guest ignores shutdown() wherever it runs (a hung or OS-less guest)."""
        with self._lock:
            if ignore:
                self._ignore_acpi.add(vm)
            else:
                self._ignore_acpi.discard(vm)

    def pause(self, node: str, vm: str) -> None:
        """A running domain becomes PAUSED (still held); a no-op in any other state."""
        with self._lock:
            held = self._held.get((node, vm))
            if held is not None and held.phase is Phase.RUNNING and not held.stopping:
                self._set_phase(node, vm, held, Phase.PAUSED)

    def resume(self, node: str, vm: str) -> None:
        with self._lock:
            held = self._held.get((node, vm))
            if held is not None and held.phase is Phase.PAUSED:
                self._set_phase(node, vm, held, Phase.RUNNING)

    def crash(self, node: str, vm: str) -> None:
        """A held domain goes off at once, stop reason CRASHED; a no-op when not held."""
        key = (node, vm)
        with self._lock:
            held = self._held.get(key)
            if held is None:
                return
            inner = self._hosts[node].inner
            if inner is not None and held.phase is not Phase.INCOMING:
                try:
                    inner.destroy(vm)
                except HypervisorError as err:
                    log.warning(
                        "event=simulated_crash_destroy_failed node=%s vm=%s error=%s", *key, err
                    )
            self._stop_reasons[key] = StopReason.CRASHED
            self._unhold(node, vm, held, "crashed")

    def drop_events(self, node: str, drop: bool = True) -> None:
        """Lifecycle events of ``node``'s domains are lost, not delivered (as across a
        libvirtd restart): only a look at the domains finds what changed."""
        with self._lock:
            if drop:
                self._deaf.add(node)
            else:
                self._deaf.discard(node)

    def fail_migrations(self, vm: str, why: str, count: int = 1) -> None:
        """The next ``count`` live migrations of ``vm`` fail half-way, saying ``why``."""
        with self._lock:
            self._migrations.plan_failures(vm, why, count)

    def slow_migrations(self, vm: str, seconds: float | None) -> None:
        """Live migrations of ``vm`` take ``seconds`` (None: Timings.migrate again)."""
        with self._lock:
            self._migrations.set_duration(vm, seconds)

    def set_live_migration(self, node: str, allowed: bool | None) -> None:
        """Whether ``node`` can live-migrate (None: as the world's ``live_migration``)."""
        with self._lock:
            self._host(node).live_migration = allowed

    def cut(self, node: str) -> None:
        """Every driver call on `node` raises HypervisorUnavailable; domains stay as they are."""
        with self._lock:
            host = self._host(node)
            if not host.cut:
                host.cut = True
                self._record(node, NODE_WIDE, "cut")
        log.info("event=simulated_cut node=%s", node)

    def uncut(self, node: str) -> None:
        with self._lock:
            host = self._host(node)
            if host.cut:
                host.cut = False
                self._record(node, NODE_WIDE, "uncut")
        log.info("event=simulated_uncut node=%s", node)

    def power_off(self, node: str) -> None:
        """The host loses power: every domain on it is gone at once, any start or destroy
        under way ends, and driver calls raise HypervisorUnavailable until power_on."""
        with self._power_lock:
            with self._lock:
                host = self._host(node)
                if not host.powered:
                    return
                host.powered = False
                host.power_cycles += 1
                lost = sorted(name for (holder, name) in self._held if holder == node)
                for name in lost:
                    held = self._held.pop((node, name))
                    self._record(node, name, "off:power-lost")
                    self._interrupt(node, name, held, "lost power")
                for records in (self._stop_reasons, self._specs):
                    for key in [key for key in records if key[0] == node]:
                        del records[key]
                inner, host.inner = host.inner, None
                self._record(node, NODE_WIDE, "power-off")
                self._changed.notify_all()
                # The test driver keeps a connection's domains in memory only, so a fresh
                # connection at power on is the rebooted, empty host. The old one is closed
                # only by close(): libvirt's test driver frees a connection's state on
                # close even while another thread's call still uses it.
                if inner is not None:
                    self._retired.append(inner)
            log.warning("event=simulated_power_off node=%s vms=%s", node, ",".join(lost))
            self._tell_power(node, False)

    def power_on(self, node: str) -> None:
        """The host comes back, holding and defining nothing; a cut is cleared."""
        with self._power_lock:
            with self._lock:
                host = self._host(node)
                if host.powered:
                    return
                host.powered = True
                host.cut = False
                if host.uri is not None:
                    host.inner = LibvirtDriver(host.uri)
                self._record(node, NODE_WIDE, "power-on")
            log.info("event=simulated_power_on node=%s", node)
            self._tell_power(node, True)

    def powered(self, node: str) -> bool:
        with self._lock:
            return self._host(node).powered

    def on_power(self, callback: Callable[[str, bool], None]) -> None:
        """Call ``callback(node, on)`` after each power change."""
        with self._power_lock:
            self._power_callbacks.append(callback)

    def agent(self, node: str) -> FenceAgent:
        """A fence agent whose power_off/power_on/power_status act on this world's `node`."""
        return SimulatedPowerAgent(self, node)

    def close(self) -> None:
        """Close every driver and every host's libvirt connection (at the end of a test)."""
        with self._lock:
            hosts = list(self._hosts.values())
            inners = [host.inner for host in hosts if host.inner is not None] + self._retired
            self._retired = []
        for host in hosts:
            for driver in list(host.drivers):
                driver.close()
        for inner in inners:
            inner.close()

    # -- the driver's verbs, on the world ------------------------------------------------

    def _start(self, node: str, name: str) -> None:
        key = (node, name)
        with self._lock:
            host = self._hosts[node]
            while True:
                self._check_up(host, "start", name)
                current = self._held.get(key)
                if current is None:
                    break
                if current.stopping:  # libvirt runs one job at a time: the destroy first
                    self._wait_stopped(key, current)
                elif current.phase is Phase.STARTING:
                    self._wait_started(key, current)
                else:
                    return
            inner = self._inner(host, "start", name)
            if inner.state(name) is DomainState.ABSENT:
                raise DomainNotFound(
                    f"start domain {name!r}: not defined on {node}", operation="start", domain=name
                )
            held = Held(Phase.STARTING)
            cycle = host.power_cycles
            self._hold(node, name, held)
            self._changed.wait_for(lambda: held.interrupted, timeout=self.timings.start)
            if held.interrupted:
                if host.power_cycles != cycle:
                    raise unavailable("start", name, f"host {node} lost power while starting it")
                raise OperationFailed(
                    f"start domain {name!r}: stopped while starting", operation="start", domain=name
                )
            try:
                inner.start(name)
            except HypervisorError:
                self._unhold(node, name, held, "start-failed")
                raise
            self._set_phase(node, name, held, Phase.RUNNING)

    def _wait_started(self, key: tuple[str, str], held: Held) -> None:
        self._changed.wait_for(
            lambda: self._held.get(key) is not held or held.phase is not Phase.STARTING
        )

    def _stop(self, node: str, name: str, operation: str) -> bool:
        """Force a held domain off, taking `destroy` seconds; False when it was not held."""
        key = (node, name)
        with self._lock:
            host = self._hosts[node]
            cycle = host.power_cycles
            held = self._held.get(key)
            if held is None:
                return False
            while held is not None and held.stopping:
                self._wait_stopped(key, held)
                held = self._held.get(key)
            if held is not None:
                held.stopping = True
                self._record(node, name, "destroying")
                self._interrupt(node, name, held, "was destroyed")
                self._changed.notify_all()
                current = held
                self._changed.wait_for(
                    lambda: self._held.get(key) is not current, timeout=self.timings.destroy
                )
                if self._held.get(key) is held:
                    try:
                        self._inner(host, operation, name).destroy(name)
                    except HypervisorError:
                        held.stopping = False
                        self._changed.notify_all()
                        raise
                    self._unhold(node, name, held, "destroyed")
            if host.power_cycles != cycle:
                raise unavailable(operation, name, f"host {node} lost power")
            return True

    def _wait_stopped(self, key: tuple[str, str], held: Held) -> None:
        self._changed.wait_for(lambda: self._held.get(key) is not held or not held.stopping)

    def _shutdown(self, node: str, name: str) -> bool:
        """Send ACPI to a held domain; False when it was not held."""
        with self._lock:
            held = self._held.get((node, name))
            if held is None:
                return False
            if held.migration is not None:  # libvirt: the migration job holds the domain
                raise OperationFailed(
                    f"shutdown domain {name!r}: a live migration of it is under way",
                    operation="shutdown",
                    domain=name,
                )
            if held.phase is not Phase.RUNNING or held.stopping:
                return True
            if name in self._ignore_acpi:
                self._record(node, name, "acpi-ignored")
                return True
            self._set_phase(node, name, held, Phase.SHUTTING_DOWN)
        threading.Thread(
            target=self._finish_shutdown,
            args=(node, name, held),
            name=f"faulty-acpi-{node}-{name}",
            daemon=True,
        ).start()
        return True

    def _finish_shutdown(self, node: str, name: str, held: Held) -> None:
        with self._lock:
            if self._changed.wait_for(lambda: held.interrupted, timeout=self.timings.shutdown):
                return
            if self._held.get((node, name)) is not held or held.phase is not Phase.SHUTTING_DOWN:
                return
            inner = self._hosts[node].inner
            if inner is not None:
                try:
                    inner.destroy(name)
                except HypervisorError as err:
                    log.warning(
                        "event=simulated_shutdown_failed node=%s vm=%s error=%s", node, name, err
                    )
                    return
            self._stop_reasons[(node, name)] = StopReason.GUEST_SHUTDOWN
            self._unhold(node, name, held, "guest-shutdown")

    def _defined(self, node: str, spec: DomainSpec) -> None:
        key = (node, spec.name)
        with self._lock:
            self._specs[key] = spec
            if self._stop_reasons.get(key) is StopReason.MIGRATED:
                del self._stop_reasons[key]  # migrated away, undefined, and now new here
            self._record(node, spec.name, "defined")
            self._emit(node, spec.name)

    def _undefined(self, node: str, name: str) -> None:
        with self._lock:
            self._specs.pop((node, name), None)
            self._stop_reasons.pop((node, name), None)
            self._record(node, name, "undefined")
            self._emit(node, name)

    def _reported(self, node: str, name: str, inner_state: DomainState) -> DomainState:
        """The state a driver reports: the world's when held, else off or absent."""
        with self._lock:
            held = self._held.get((node, name))
            if held is not None:
                return REPORTED[held.phase]
            if inner_state is DomainState.ABSENT:
                return DomainState.ABSENT
            if self._stop_reasons.get((node, name)) is StopReason.CRASHED:
                return DomainState.CRASHED
            return DomainState.SHUTOFF

    def _reported_stop_reason(self, node: str, name: str, inner_reason: StopReason) -> StopReason:
        with self._lock:
            if (node, name) in self._held:
                return StopReason.NOT_STOPPED
            return self._stop_reasons.get((node, name), inner_reason)

    def _usable_inner(self, node: str, operation: str, name: str) -> LibvirtDriver:
        with self._lock:
            host = self._hosts[node]
            self._check_up(host, operation, name)
            return self._inner(host, operation, name)

    def _check_after(self, node: str, operation: str, name: str) -> None:
        """A call that took a while: its connection may have been cut meanwhile."""
        with self._lock:
            self._check_up(self._hosts[node], operation, name)

    def _detach(self, driver: FaultyDriver) -> None:
        with self._lock:
            drivers = self._host(driver.node).drivers
            if driver in drivers:
                drivers.remove(driver)

    # -- under the lock --------------------------------------------------------------------

    def _host(self, node: str) -> Host:
        host = self._hosts.get(node)
        if host is None:
            host = self._hosts[node] = Host(node)
        return host

    def _check_up(self, host: Host, operation: str, name: str) -> None:
        if not host.powered:
            raise unavailable(operation, name, f"host {host.node} is powered off")
        if host.cut:
            raise unavailable(operation, name, f"node {host.node} cannot reach its hypervisor")

    def _inner(self, host: Host, operation: str, name: str) -> LibvirtDriver:
        if host.inner is None:
            raise unavailable(operation, name, f"host {host.node} is powered off")
        return host.inner

    def _holders(self, vm: str) -> set[str]:
        return {node for (node, name) in self._held if name == vm}

    def _hold(self, node: str, vm: str, held: Held, recorded: str | None = None) -> None:
        others = self._holders(vm) - {node}
        migration = held.migration
        if migration is not None and self._held.get((migration.source, vm)) is (
            migration.source_held
        ):
            others.discard(migration.source)  # an incoming copy beside its running source
        self._held[(node, vm)] = held
        self._stop_reasons.pop((node, vm), None)
        self._record(node, vm, recorded or held.phase.value)
        if others:
            nodes = tuple(sorted({*others, node}))
            detail = f"{vm} became held on {node} while {','.join(sorted(others))} held it"
            self._violations.append(Violation(vm, nodes, time.monotonic(), detail))
            log.error(
                "event=one_copy_violation vm=%s nodes=%s detail=%r", vm, ",".join(nodes), detail
            )
        self._changed.notify_all()
        self._emit(node, vm)

    def _unhold(self, node: str, vm: str, held: Held, why: str) -> None:
        if self._held.get((node, vm)) is held:
            del self._held[(node, vm)]
        self._record(node, vm, f"off:{why}")
        self._interrupt(node, vm, held, why)
        self._changed.notify_all()
        self._emit(node, vm)

    def _interrupt(self, node: str, vm: str, held: Held, why: str) -> None:
        """A holding ends or begins to (destroy): a start, ACPI shutdown or live migration
        under way ends."""
        held.interrupted = True
        migration = held.migration
        if migration is not None:
            side = "source" if held is migration.source_held else "incoming copy"
            self._migrations.break_off(migration, f"the {side} on {node} {why}")

    def _set_phase(self, node: str, vm: str, held: Held, phase: Phase) -> None:
        held.phase = phase
        self._record(node, vm, phase.value)
        self._changed.notify_all()
        self._emit(node, vm)

    def _record(self, node: str, vm: str, state: str) -> None:
        self._log.append(Transition(time.monotonic(), node, vm, state))
        log.debug("event=simulated_transition node=%s vm=%s state=%s", node, vm, state)

    def _emit(self, node: str, vm: str) -> None:
        host = self._hosts[node]
        if host.cut or not host.powered or node in self._deaf:
            return
        for driver in host.drivers:
            driver._enqueue(vm)

    def _tell_power(self, node: str, on: bool) -> None:
        for callback in list(self._power_callbacks):
            try:
                callback(node, on)
            except Exception:
                log.exception("event=power_callback_failed node=%s on=%s", node, on)
