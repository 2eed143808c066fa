"""What stands between a daemon incarnation and its hypervisor and fence agents: its ``Gate``
(dead: calls raise; paused: calls wait), the ``DriverHooks`` a test injects faults with, the
``CallLog`` of transitions, and the gated driver and fence agent wrapping the world's."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hypervisor import DiskSpec, DomainDriver, DomainInfo, DomainSpec, DomainState, HostFacts
from hypervisor.domain import LifecycleCallback, MigrationProgress, MigrationTarget, StopReason
from hypervisor.errors import HypervisorUnavailable
from hypervisor.fence import FenceAgent, FenceError, PowerState


class Gate:
    """Open, paused (calls wait) or dead (calls raise). One per daemon incarnation."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._cond = threading.Condition()
        self.paused = False
        self.dead = False

    def enter(self, what: str) -> None:
        with self._cond:
            while self.paused and not self.dead:
                self._cond.wait()
            if self.dead:
                raise HypervisorUnavailable(f"{self.name} is dead (chaos harness)", operation=what)

    def pause(self) -> None:
        with self._cond:
            self.paused = True

    def resume(self) -> None:
        with self._cond:
            self.paused = False
            self._cond.notify_all()

    def kill(self) -> None:
        with self._cond:
            self.dead = True
            self._cond.notify_all()


HookFn = Callable[[str, str, str | None], None]
"""``fn(node, op, vm)``: called in the thread making the driver call."""


@dataclass
class _Hook:
    op: str
    when: str
    fn: HookFn
    node: str | None
    vm: str | None
    once: bool
    fired: int = 0


class DriverHooks:
    """Callbacks on driver calls, e.g. ``before("start", fn, node="n2", vm="v1")``. A hook
    runs before the gate, so a hook that kills its own node stops the call it precedes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._hooks: list[_Hook] = []

    def before(
        self, op: str, fn: HookFn, *, node: str | None = None, vm: str | None = None,
        once: bool = True,
    ) -> _Hook:  # fmt: skip
        return self._add(_Hook(op, "before", fn, node, vm, once))

    def after(
        self, op: str, fn: HookFn, *, node: str | None = None, vm: str | None = None,
        once: bool = True,
    ) -> _Hook:  # fmt: skip
        return self._add(_Hook(op, "after", fn, node, vm, once))

    def _add(self, hook: _Hook) -> _Hook:
        with self._lock:
            self._hooks.append(hook)
        return hook

    def remove(self, hook: _Hook) -> None:
        with self._lock:
            self._hooks = [h for h in self._hooks if h is not hook]

    def clear(self) -> None:
        with self._lock:
            self._hooks = []

    def fire(self, when: str, node: str, op: str, vm: str | None) -> None:
        with self._lock:
            due = [
                h
                for h in self._hooks
                if h.when == when
                and h.op == op
                and h.node in (None, node)
                and (h.vm is None or h.vm == vm)
                and not (h.once and h.fired)
            ]
            for hook in due:
                hook.fired += 1
        for hook in due:
            hook.fn(node, op, vm)


class CallLog:
    """The transition log: driver calls and holder changes, newest last, bounded."""

    def __init__(self, size: int = 4000) -> None:
        self._lines: deque[str] = deque(maxlen=size)
        self._lock = threading.Lock()
        self.t0 = time.monotonic()

    def add(self, line: str) -> None:
        with self._lock:
            self._lines.append(f"{time.monotonic() - self.t0:8.3f} {line}")

    def tail(self, n: int = 60) -> list[str]:
        with self._lock:
            return list(self._lines)[-n:]


class GatedDriver(DomainDriver):
    """One incarnation's view of its node's ``FaultyDriver``: through its gate, hooked, logged.
    ``close`` leaves the shared driver open (the harness owns it)."""

    def __init__(
        self,
        inner: DomainDriver,
        node: str,
        incarnation: int,
        gate: Gate,
        hooks: DriverHooks,
        calls: CallLog,
    ) -> None:
        self.inner = inner
        self.node = node
        self.incarnation = incarnation
        self.gate = gate
        self.hooks = hooks
        self.calls = calls

    def _call(self, op: str, vm: str | None, fn: Callable[[], Any], logged: bool = True) -> Any:
        self.hooks.fire("before", self.node, op, vm)
        self.gate.enter(op)
        try:
            result = fn()
        except Exception as exc:
            if logged:
                self.calls.add(f"{self.node}#{self.incarnation} {op} {vm or ''} -> {exc!r}")
            raise
        if logged:
            self.calls.add(f"{self.node}#{self.incarnation} {op} {vm or ''} ok")
        self.hooks.fire("after", self.node, op, vm)
        return result

    def define(self, spec: DomainSpec) -> None:
        self._call("define", spec.name, lambda: self.inner.define(spec))

    def create_disk(self, disk: DiskSpec) -> None:
        self._call("create_disk", disk.path, lambda: self.inner.create_disk(disk))

    def disk_exists(self, path: str) -> bool:
        result: bool = self._call("disk_exists", path, lambda: self.inner.disk_exists(path), False)
        return result

    def start(self, name: str) -> None:
        self.calls.add(f"{self.node}#{self.incarnation} start {name} begins")
        self._call("start", name, lambda: self.inner.start(name))

    def shutdown(self, name: str) -> None:
        self._call("shutdown", name, lambda: self.inner.shutdown(name))

    def destroy(self, name: str) -> None:
        self._call("destroy", name, lambda: self.inner.destroy(name))

    def undefine(self, name: str) -> None:
        self._call("undefine", name, lambda: self.inner.undefine(name))

    def state(self, name: str) -> DomainState:
        result: DomainState = self._call("state", name, lambda: self.inner.state(name), False)
        return result

    def stop_reason(self, name: str) -> StopReason:
        result: StopReason = self._call(
            "stop_reason", name, lambda: self.inner.stop_reason(name), False
        )
        return result

    def watch_lifecycle(self, callback: LifecycleCallback) -> None:
        gate = self.gate

        def gated(name: str) -> None:
            if not gate.dead:
                callback(name)

        self.inner.watch_lifecycle(gated)

    def info(self, name: str) -> DomainInfo | None:
        result: DomainInfo | None = self._call("info", name, lambda: self.inner.info(name), False)
        return result

    def list_managed(self) -> list[DomainInfo]:
        result: list[DomainInfo] = self._call(
            "list_managed", None, lambda: self.inner.list_managed(), False
        )
        return result

    def host_facts(self) -> HostFacts:
        result: HostFacts = self._call("host_facts", None, lambda: self.inner.host_facts(), False)
        return result

    def live_migration_problem(self) -> str | None:
        result: str | None = self._call(
            "live_migration_problem", None, lambda: self.inner.live_migration_problem(), False
        )
        return result

    def migrate(self, name: str, target: MigrationTarget, *, max_downtime_ms: int) -> None:
        self.calls.add(f"{self.node}#{self.incarnation} migrate {name} to {target.node} begins")
        self._call(
            "migrate",
            name,
            lambda: self.inner.migrate(name, target, max_downtime_ms=max_downtime_ms),
        )

    def migration_progress(self, name: str) -> MigrationProgress | None:
        result: MigrationProgress | None = self._call(
            "migration_progress", name, lambda: self.inner.migration_progress(name), False
        )
        return result

    def abort_migration(self, name: str) -> bool:
        result: bool = self._call("abort_migration", name, lambda: self.inner.abort_migration(name))
        return result

    def close(self) -> None:
        self.inner.close()


class GatedAgent(FenceAgent):
    """A node's fence agent as one incarnation (the primary's) sees it."""

    def __init__(self, inner: FenceAgent, gate: Gate, target: str, calls: CallLog) -> None:
        self.inner = inner
        self.gate = gate
        self.target = target
        self.calls = calls

    def _enter(self, what: str) -> None:
        try:
            self.gate.enter(what)
        except HypervisorUnavailable as exc:
            raise FenceError(str(exc)) from None

    def power_off(self) -> None:
        self._enter("power_off")
        self.calls.add(f"fence {self.target} power_off (by {self.gate.name})")
        self.inner.power_off()

    def power_on(self) -> None:
        self._enter("power_on")
        self.calls.add(f"fence {self.target} power_on (by {self.gate.name})")
        self.inner.power_on()

    def power_status(self) -> PowerState:
        self._enter("power_status")
        return self.inner.power_status()

    @property
    def description(self) -> str:
        return f"chaos world agent for {self.target}"
