"""The fault-injecting DomainDriver of one simulated node, and that node's power switch:
both act on a HypervisorWorld (hypervisor/faulty.py), which holds the truth."""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import replace
from typing import TYPE_CHECKING

from hypervisor.domain import (
    ConsoleTail,
    DiskSpec,
    DomainDriver,
    DomainInfo,
    DomainSpec,
    DomainState,
    HostFacts,
    LifecycleCallback,
    MigrationProgress,
    MigrationTarget,
    StopReason,
)
from hypervisor.faulty_state import unavailable
from hypervisor.fence.base import FenceAgent, PowerState
from hypervisor.libvirt_driver import LibvirtDriver

if TYPE_CHECKING:
    from hypervisor.faulty import HypervisorWorld

log = logging.getLogger(__name__)


class FaultyDriver(DomainDriver):
    """Wraps a real LibvirtDriver on the node's test:/// URI and adds real durations and
    faults. state() reports PAUSED while a start is in progress (as libvirt does for a QEMU
    starting up), SHUTTING_DOWN while an ACPI shutdown runs, PAUSED when paused;
    stop_reason() reports GUEST_SHUTDOWN after a completed ACPI shutdown, CRASHED after
    crash(), MIGRATED after a live migration away. start/destroy/undefine/migrate block the
    caller for their duration (the domain is held throughout); shutdown returns at once.
    Made by HypervisorWorld.driver().
    """

    def __init__(self, world: HypervisorWorld, node: str) -> None:
        self.node = node
        self._world = world
        self._closed = False
        self._callback: LifecycleCallback | None = None
        self._events: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._dispatcher: threading.Thread | None = None

    def define(self, spec: DomainSpec) -> None:
        self._inner("define", spec.name).define(spec)
        self._world._defined(self.node, spec)

    def create_disk(self, disk: DiskSpec) -> None:
        self._inner("create-disk", disk.path).create_disk(disk)

    def ensure_ceph_secret(self, uuid: str, usage: str, key: str) -> None:
        self._inner("ensure-ceph-secret", uuid).ensure_ceph_secret(uuid, usage, key)

    def disk_exists(self, path: str) -> bool:
        return self._inner("disk-exists", path).disk_exists(path)

    def block_resize(self, name: str, target: str, size: int) -> bool:
        return self._inner("block-resize", name).block_resize(name, target, size)

    def start(self, name: str) -> None:
        self._inner("start", name)
        self._world._start(self.node, name)
        self._world._check_after(self.node, "start", name)

    def shutdown(self, name: str) -> None:
        inner = self._inner("shutdown", name)
        if not self._world._shutdown(self.node, name):
            inner.shutdown(name)

    def destroy(self, name: str) -> None:
        inner = self._inner("destroy", name)
        if not self._world._stop(self.node, name, "destroy"):
            inner.destroy(name)
        self._world._check_after(self.node, "destroy", name)

    def undefine(self, name: str) -> None:
        self._inner("undefine", name)
        self._world._stop(self.node, name, "undefine")
        self._inner("undefine", name).undefine(name)
        self._world._undefined(self.node, name)
        self._world._check_after(self.node, "undefine", name)

    def state(self, name: str) -> DomainState:
        inner_state = self._inner("state", name).state(name)
        return self._world._reported(self.node, name, inner_state)

    def stop_reason(self, name: str) -> StopReason:
        inner_reason = self._inner("stop-reason", name).stop_reason(name)
        return self._world._reported_stop_reason(self.node, name, inner_reason)

    def watch_lifecycle(self, callback: LifecycleCallback) -> None:
        self._callback = callback
        if self._dispatcher is None and not self._closed:
            self._dispatcher = threading.Thread(
                target=self._dispatch, name=f"faulty-events-{self.node}", daemon=True
            )
            self._dispatcher.start()

    def info(self, name: str) -> DomainInfo | None:
        found = self._inner("info", name).info(name)
        if found is None:
            return self._world._migrations.incoming_infos(self.node).get(name)
        return replace(found, state=self._world._reported(self.node, name, found.state))

    def list_managed(self) -> list[DomainInfo]:
        listed = [
            replace(found, state=self._world._reported(self.node, found.name, found.state))
            for found in self._inner("list", "").list_managed()
        ]
        names = {found.name for found in listed}
        incoming = self._world._migrations.incoming_infos(self.node)
        return listed + [info for name, info in incoming.items() if name not in names]

    def host_facts(self) -> HostFacts:
        return self._inner("host-facts", "").host_facts()

    def live_migration_problem(self) -> str | None:
        return self._world._migrations.live_migration_problem(self.node)

    def migrate(self, name: str, target: MigrationTarget, *, max_downtime_ms: int) -> None:
        self._check_open("migrate", name)
        self._world._migrations.migrate(self.node, name, target, max_downtime_ms)

    def migration_progress(self, name: str) -> MigrationProgress | None:
        self._inner("migration-progress", name)
        return self._world._migrations.progress(self.node, name)

    def abort_migration(self, name: str) -> bool:
        self._inner("abort-migration", name)
        return self._world._migrations.abort(self.node, name)

    def defined_xml(self, name: str) -> str | None:
        return self._inner("defined-xml", name).defined_xml(name)

    def console_tail(self, name: str, limit: int) -> ConsoleTail | None:
        return self._inner("console-tail", name).console_tail(name, limit)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._world._detach(self)
        self._events.put(None)

    def _inner(self, operation: str, name: str) -> LibvirtDriver:
        self._check_open(operation, name)
        return self._world._usable_inner(self.node, operation, name)

    def _check_open(self, operation: str, name: str) -> None:
        if self._closed:
            raise unavailable(operation, name, f"driver for {self.node} is closed")

    def _enqueue(self, name: str) -> None:
        if self._callback is not None and not self._closed:
            self._events.put(name)

    def _dispatch(self) -> None:
        while True:
            name = self._events.get()
            if name is None:
                return
            callback = self._callback
            if callback is None:
                continue
            try:
                callback(name)
            except Exception:  # a callback bug must not end the event thread
                log.exception("event=lifecycle_callback_failed node=%s vm=%s", self.node, name)


class SimulatedPowerAgent(FenceAgent):
    """A fence agent on a HypervisorWorld's simulated power switch of one node."""

    def __init__(self, world: HypervisorWorld, node: str) -> None:
        self._world = world
        self.node = node

    def power_off(self) -> None:
        self._world.power_off(self.node)

    def power_on(self) -> None:
        self._world.power_on(self.node)

    def power_status(self) -> PowerState:
        return PowerState.ON if self._world.powered(self.node) else PowerState.OFF

    @property
    def description(self) -> str:
        return f"simulated power of {self.node}"
