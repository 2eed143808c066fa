"""Live migration between the simulated hosts of a HypervisorWorld, as libvirt's
peer-to-peer live migration with PERSIST_DEST and UNDEFINE_SOURCE does it: the rules are
in the docstring of hypervisor/faulty.py."""

from __future__ import annotations

import collections
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from hypervisor.domain import (
    DomainInfo,
    DomainSpec,
    DomainState,
    MigrationProgress,
    MigrationTarget,
    StopReason,
)
from hypervisor.errors import (
    DomainNotFound,
    HypervisorError,
    MigrationFailed,
    MigrationUnsupported,
)
from hypervisor.faulty_state import REPORTED, Held, Host, Phase, unavailable

if TYPE_CHECKING:
    from hypervisor.faulty import HypervisorWorld

log = logging.getLogger(__name__)

MIB = 1024 * 1024


@dataclass(eq=False)
class Migration:
    """One live migration, from its migrate() call to its switch-over or failure."""

    source: str
    target: MigrationTarget
    spec: DomainSpec
    source_held: Held
    incoming: Held
    duration: float
    planned_failure: str | None
    """Why it fails half-way (world.fail_migrations); None: it completes."""
    max_downtime_ms: int
    began: float = field(default_factory=time.monotonic)
    failure: str | None = None
    """Why it failed, once it has."""

    @property
    def vm(self) -> str:
        return self.spec.name


class Migrations:
    """The live-migration part of a HypervisorWorld, on the world's holdings under the
    world's lock: the drivers' verbs take it, the methods under "under the lock" need it."""

    def __init__(self, world: HypervisorWorld, *, live_migration: bool) -> None:
        self._world = world
        self.live_migration = live_migration
        """Whether hosts can live-migrate unless set per host."""
        self._running: dict[tuple[str, str], Migration] = {}
        """By (source node, vm)."""
        self._planned_failures: dict[str, collections.deque[str]] = {}
        self._durations: dict[str, float] = {}

    # -- faults, set through the world (under the lock) -----------------------------------

    def plan_failures(self, vm: str, why: str, count: int) -> None:
        self._planned_failures.setdefault(vm, collections.deque()).extend([why] * count)

    def set_duration(self, vm: str, seconds: float | None) -> None:
        if seconds is None:
            self._durations.pop(vm, None)
        else:
            self._durations[vm] = seconds

    # -- the driver's verbs --------------------------------------------------------------

    def live_migration_problem(self, node: str) -> str | None:
        with self._world._lock:
            return self.problem(self._world._hosts[node])

    def migrate(self, node: str, name: str, target: MigrationTarget, max_downtime_ms: int) -> None:
        world = self._world
        with world._lock:
            source = world._hosts[node]
            problem = self.problem(source)
            if problem is not None:
                raise MigrationUnsupported(
                    f"migrate domain {name!r} to {target.node}: {problem}",
                    operation="migrate",
                    domain=name,
                )
            world._check_up(source, "migrate", name)
            migration = self._begin(source, name, target, max_downtime_ms)
            cycle = source.power_cycles
            world._changed.wait_for(
                lambda: migration.failure is not None,
                timeout=migration.duration / 2 if migration.planned_failure else migration.duration,
            )
            if migration.failure is None:
                if migration.planned_failure is not None:
                    self.break_off(migration, migration.planned_failure)
                else:
                    self._switch_over(migration)
            if source.power_cycles != cycle:
                raise unavailable("migrate", name, f"host {node} lost power while migrating it")
            # Cut meanwhile: libvirtd went on with it, but this caller cannot know the outcome.
            world._check_up(source, "migrate", name)
            if migration.failure is not None:
                raise MigrationFailed(
                    f"migrate domain {name!r} to {target.node}: {migration.failure}",
                    operation="migrate",
                    domain=name,
                )

    def progress(self, node: str, name: str) -> MigrationProgress | None:
        with self._world._lock:
            migration = self._running.get((node, name))
            outgoing = migration is not None
            if migration is None:  # the destination sees its incoming job too
                migration = next(
                    (
                        m
                        for (_source, vm), m in self._running.items()
                        if vm == name and m.target.node == node
                    ),
                    None,
                )
        if migration is None:
            return None
        elapsed = time.monotonic() - migration.began
        done = min(1.0, elapsed / migration.duration) if migration.duration > 0 else 1.0
        total = migration.spec.memory_mib * MIB
        remaining = round(total * (1.0 - done))
        return MigrationProgress(
            data_total=total,
            data_processed=total - remaining,
            data_remaining=remaining,
            elapsed_ms=round(elapsed * 1000),
            outgoing=outgoing,
        )

    def abort(self, node: str, name: str) -> bool:
        with self._world._lock:
            migration = self._running.get((node, name))
            if migration is None:
                return False
            self.break_off(migration, "aborted")
            return True

    def incoming_infos(self, node: str) -> dict[str, DomainInfo]:
        """The incoming copies on ``node``, as a listing shows them (they are not defined on
        its test driver until the switch-over)."""
        with self._world._lock:
            return {
                m.vm: DomainInfo(m.vm, m.spec.uuid, REPORTED[Phase.INCOMING], m.spec.owner_tag)
                for m in self._running.values()
                if m.target.node == node
            }

    # -- under the lock --------------------------------------------------------------------

    def problem(self, host: Host) -> str | None:
        """Why ``host`` cannot live-migrate at all; None when it can."""
        allowed = self.live_migration if host.live_migration is None else host.live_migration
        return None if allowed else f"simulated host {host.node} cannot live-migrate"

    def break_off(self, migration: Migration, why: str) -> None:
        """The migration fails: the incoming copy is dropped, the source stays as it is."""
        if (
            migration.failure is not None
            or self._running.get((migration.source, migration.vm)) is not migration
        ):
            return
        migration.failure = why
        self._end(migration)
        world = self._world
        world._record(migration.source, migration.vm, "migration-failed")
        if world._held.get((migration.target.node, migration.vm)) is migration.incoming:
            world._unhold(
                migration.target.node, migration.vm, migration.incoming, "migration-failed"
            )
        world._changed.notify_all()
        log.info(
            "event=simulated_migration_failed vm=%s source=%s target=%s why=%r",
            migration.vm,
            migration.source,
            migration.target.node,
            why,
        )

    def _begin(
        self, source: Host, name: str, target: MigrationTarget, max_downtime_ms: int
    ) -> Migration:
        world = self._world
        key = (source.node, name)
        held = world._held.get(key)
        why: str | None = None
        if held is None or held.phase is not Phase.RUNNING or held.stopping:
            if held is None and world._inner(source, "migrate", name).state(name) is (
                DomainState.ABSENT
            ):
                raise DomainNotFound(
                    f"migrate domain {name!r}: not defined on {source.node}",
                    operation="migrate",
                    domain=name,
                )
            why = f"it is not running on {source.node}"
        elif held.migration is not None:
            why = f"a migration of it to {held.migration.target.node} is under way"
        else:
            why = self._target_problem(source, name, target.node)
        spec = world._specs.get(key)
        if why is None and spec is None:
            why = f"its definition on {source.node} is not known"
        if why is not None or held is None or spec is None:
            raise MigrationFailed(
                f"migrate domain {name!r} to {target.node}: {why}", operation="migrate", domain=name
            )
        planned = self._planned_failures.get(name)
        migration = Migration(
            source.node,
            target,
            spec,
            held,
            Held(Phase.INCOMING),
            self._durations.get(name, world.timings.migrate),
            planned.popleft() if planned else None,
            max_downtime_ms,
        )
        if planned is not None and not planned:
            del self._planned_failures[name]
        held.migration = migration.incoming.migration = migration
        self._running[key] = migration
        world._record(source.node, name, f"migrating-out:{target.node}")
        world._hold(target.node, name, migration.incoming, f"incoming:{source.node}")
        log.info(
            "event=simulated_migration_started vm=%s source=%s target=%s seconds=%s",
            name,
            source.node,
            target.node,
            migration.duration,
        )
        return migration

    def _target_problem(self, source: Host, name: str, node: str) -> str | None:
        world = self._world
        target = world._hosts.get(node)
        if target is None or target.uri is None:
            return f"target {node} is no simulated host"
        if target is source:
            return "the target is the source"
        if not target.powered:
            return f"target host {node} is powered off"
        if (node, name) in world._held:
            return f"it is already active on {node}"
        return self.problem(target)

    def _switch_over(self, migration: Migration) -> None:
        """Atomically: the source's copy off (MIGRATED) and undefined, the target's copy
        running and defined there."""
        world = self._world
        source, target, vm = migration.source, migration.target.node, migration.vm
        source_inner = world._inner(world._hosts[source], "migrate", vm)
        target_inner = world._inner(world._hosts[target], "migrate", vm)
        try:
            target_inner.define(migration.spec)  # PERSIST_DEST
            target_inner.start(vm)
        except HypervisorError as err:
            self.break_off(migration, f"{target} refused it: {err}")
            return
        self._end(migration)
        for step in (source_inner.destroy, source_inner.undefine):  # UNDEFINE_SOURCE
            try:
                step(vm)
            except HypervisorError as err:
                log.warning(
                    "event=simulated_migration_cleanup_failed node=%s vm=%s error=%s",
                    source,
                    vm,
                    err,
                )
        world._unhold(source, vm, migration.source_held, "migrated")
        world._specs.pop((source, vm), None)
        world._stop_reasons[(source, vm)] = StopReason.MIGRATED
        world._record(source, vm, "undefined")
        world._emit(source, vm)
        world._specs[(target, vm)] = migration.spec
        world._record(target, vm, "defined")
        world._emit(target, vm)
        paused = migration.source_held.phase is Phase.PAUSED
        world._set_phase(target, vm, migration.incoming, Phase.PAUSED if paused else Phase.RUNNING)
        log.info("event=simulated_migration_done vm=%s source=%s target=%s", vm, source, target)

    def _end(self, migration: Migration) -> None:
        del self._running[(migration.source, migration.vm)]
        migration.source_held.migration = None
        migration.incoming.migration = None
