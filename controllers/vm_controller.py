"""The node's VM controller: a domain exists and runs exactly when the VM is placed here and
its runStrategy says run.

It watches only this node's index (``/index/nodes/<node>``) and the specs of
the VMs listed there, so its watch cost is O(VMs on this node).
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from typing import Any

from kazoo.recipe.watchers import DataWatch

from controllers.domainspec import domain_spec, macs_of
from controllers.runtime import Controller
from hypervisor import DomainDriver, DomainState, HypervisorError
from schemas import (
    Network,
    Placement,
    RunStrategy,
    VirtualMachine,
    VirtualMachineStatus,
    VMPhase,
    set_condition,
    to_bytes,
    to_seconds,
)
from zkstore import Informer, NotFound, Store, paths
from zkstore.codec import decode

log = logging.getLogger(__name__)

_RUNNING_STATES = (DomainState.RUNNING, DomainState.PAUSED)


class VMController:
    def __init__(
        self,
        store: Store,
        driver: DomainDriver,
        node: str,
        *,
        disk_dir: str,
        workers: int = 4,
        resync_period: float = 30.0,
    ) -> None:
        self.store = store
        self.driver = driver
        self.node = node
        self.disk_dir = disk_dir
        self.owner_tag = store.root
        self.index = Informer(store, paths.node_index(node), self._on_index_key)
        self._specs: dict[str, VirtualMachine | None] = {}
        # name -> token of its live spec watch; a watch whose token is stale ends itself.
        self._watched: dict[str, int] = {}
        self._tokens = itertools.count(1)
        self._lock = threading.Lock()
        self._defined_generation: dict[str, int] = {}
        self._stop_deadline: dict[str, float] = {}
        self._last_status: dict[str, dict[str, Any]] = {}
        self.controller = Controller(
            f"vm@{node}",
            self.reconcile,
            workers=workers,
            resync_period=resync_period,
            list_keys=self._all_keys,
        )

    # -- wiring ------------------------------------------------------------

    def start(self) -> None:
        self.controller.start()
        self.index.start()
        # Domains left from before a restart that are no longer placed here.
        for key in self._all_keys():
            self.controller.enqueue(key)

    def stop(self) -> None:
        self.controller.stop()
        self.index.close()

    def _all_keys(self) -> set[str]:
        keys = set(self.index.keys())
        try:
            keys |= {d.name for d in self.driver.list_managed() if d.owner_tag == self.owner_tag}
        except HypervisorError as exc:
            log.warning("event=list_domains_failed node=%s error=%s", self.node, exc)
        return keys

    def _on_index_key(self, name: str) -> None:
        # Runs on kazoo's event thread, where a blocking ZooKeeper call would deadlock:
        # the spec watch is set up by the worker in reconcile.
        self.controller.enqueue(name)

    def _watch_spec(self, name: str) -> None:
        with self._lock:
            if name in self._watched:
                return
            token = self._watched[name] = next(self._tokens)
        # DataWatch reads once now (calling _on_spec) and again on every change.
        DataWatch(
            self.store.client,
            self.store.path(paths.resource("vms", name)),
            lambda data, _stat, _event=None: self._on_spec(name, token, data),
        )

    def _on_spec(self, name: str, token: int, data: bytes | None) -> bool:
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
        self.controller.enqueue(name)
        return True

    def _forget(self, name: str) -> None:
        with self._lock:
            self._watched.pop(name, None)
            self._specs.pop(name, None)
        self._defined_generation.pop(name, None)
        self._stop_deadline.pop(name, None)
        self._last_status.pop(name, None)

    # -- reconcile ---------------------------------------------------------

    def reconcile(self, name: str) -> float | None:
        raw = self.index.data(name)
        placement = Placement.model_validate(raw) if raw is not None else None
        with self._lock:
            vm = self._specs.get(name)
            known = name in self._watched
        log.debug(
            "event=reconcile vm=%s node=%s placement=%s known=%s spec=%s",
            name,
            self.node,
            placement,
            known,
            vm is not None,
        )
        if placement is None or placement.node != self.node:
            # The cache may lag; destroying a domain is decided on a fresh read only.
            if self.store.node_index_entry(self.node, name) is not None:
                return 0.1
            self._remove_domain(name)
            self._forget(name)
            return None
        if not known:
            self._watch_spec(name)
            with self._lock:
                vm = self._specs.get(name)
        if vm is None:
            if self.store.exists(VirtualMachine, name):
                return 0.1  # the spec watch has not delivered yet
            self._remove_domain(name)  # VM deleted; its index entry goes with it
            return None
        try:
            if vm.spec.run_strategy == RunStrategy.HALTED:
                return self._ensure_stopped(vm, placement)
            return self._ensure_running(vm, placement)
        except HypervisorError as exc:
            # Say why in the status; the runtime retries with back-off.
            self._write_status(vm, placement, VMPhase.FAILED, "HypervisorError", str(exc))
            raise

    def _ensure_running(self, vm: VirtualMachine, placement: Placement) -> float | None:
        name = vm.name
        self._stop_deadline.pop(name, None)
        generation = vm.metadata.generation or 0
        state = self.driver.state(name)
        if state == DomainState.ABSENT or self._defined_generation.get(name) != generation:
            try:
                networks = {n: self._network(n) for n in {nic.network for nic in vm.spec.nics}}
                spec = domain_spec(
                    vm, {k: v for k, v in networks.items() if v}, self.disk_dir, self.owner_tag
                )
            except KeyError as exc:
                self._write_status(
                    vm,
                    placement,
                    VMPhase.FAILED,
                    "NetworkNotFound",
                    f"network {exc.args[0]!r} does not exist",
                )
                return 30.0
            # Redefining a running domain is safe: libvirt applies it at the next boot.
            self.driver.define(spec)
            self._defined_generation[name] = generation
            log.info(
                "event=domain_defined vm=%s node=%s generation=%d", name, self.node, generation
            )
        if state not in _RUNNING_STATES:
            self._write_status(vm, placement, VMPhase.STARTING, "Starting", "starting the domain")
            self.driver.start(name)
            log.info("event=domain_started vm=%s node=%s", name, self.node)
        self._write_status(vm, placement, VMPhase.RUNNING, "Running", f"running on {self.node}")
        return None

    def _ensure_stopped(self, vm: VirtualMachine, placement: Placement) -> float | None:
        name = vm.name
        state = self.driver.state(name)
        if state not in (*_RUNNING_STATES, DomainState.SHUTTING_DOWN):
            self._stop_deadline.pop(name, None)
            self._write_status(vm, placement, VMPhase.STOPPED, "Halted", "runStrategy is Halted")
            return None
        now = time.monotonic()
        deadline = self._stop_deadline.get(name)
        if deadline is None:
            deadline = now + to_seconds(vm.spec.shutdown_timeout)
            self._stop_deadline[name] = deadline
            self.driver.shutdown(name)
            log.info(
                "event=domain_shutdown vm=%s node=%s timeout=%s",
                name,
                self.node,
                vm.spec.shutdown_timeout,
            )
        if now >= deadline:
            self.driver.destroy(name)
            log.warning(
                "event=domain_forced_off vm=%s node=%s reason=shutdown_timeout", name, self.node
            )
            self._stop_deadline.pop(name, None)
            self._write_status(
                vm,
                placement,
                VMPhase.STOPPED,
                "ForcedOff",
                f"guest did not shut down within {vm.spec.shutdown_timeout}",
            )
            return None
        self._write_status(
            vm,
            placement,
            VMPhase.STOPPING,
            "ShuttingDown",
            f"waiting up to {vm.spec.shutdown_timeout} for the guest to shut down",
        )
        return min(1.0, deadline - now)

    def _remove_domain(self, name: str) -> None:
        state = self.driver.state(name)
        if state == DomainState.ABSENT:
            return
        owned = any(
            d.name == name and d.owner_tag == self.owner_tag for d in self.driver.list_managed()
        )
        if not owned:
            return
        self.driver.undefine(name)
        log.info("event=domain_removed vm=%s node=%s reason=not_placed_here", name, self.node)

    def _network(self, name: str) -> Network | None:
        try:
            return self.store.get(Network, name)
        except NotFound:
            return None

    def _write_status(
        self, vm: VirtualMachine, placement: Placement, phase: VMPhase, reason: str, message: str
    ) -> None:
        name = vm.name
        previous = self._last_status.get(name)
        if previous is None:
            previous = self.store.read_status(VirtualMachine, name) or {}
        status = (
            VirtualMachineStatus.model_validate(previous) if previous else VirtualMachineStatus()
        )
        last_node = status.node if status.node and status.node != self.node else status.last_node
        conditions = set_condition(
            status.conditions, "Scheduled", True, "Scheduled", f"placed on {self.node}"
        )
        conditions = set_condition(conditions, "Ready", phase == VMPhase.RUNNING, reason, message)
        new = VirtualMachineStatus(
            observed_generation=vm.metadata.generation,
            conditions=conditions,
            phase=phase,
            node=self.node,
            last_node=last_node,
            epoch=placement.epoch,
            reason=reason,
            domain_uuid=vm.metadata.uid,
            macs=macs_of(vm),
        )
        wire = new.wire()
        if wire == previous:
            return
        try:
            self.store.write_status(VirtualMachine, name, new)
        except NotFound:
            return
        self._last_status[name] = wire

    # -- accounting for the node's heartbeat ---------------------------------

    def allocations(self) -> tuple[int, int, int, int]:
        """(memory allocated, memory provisioned, vCPUs allocated, running VMs) on this node."""
        allocated = provisioned = vcpus = count = 0
        with self._lock:
            specs = [s for n, s in self._specs.items() if s is not None and n in self._watched]
        for vm in specs:
            memory = to_bytes(vm.spec.memory)
            provisioned += memory
            if vm.spec.run_strategy != RunStrategy.HALTED:
                allocated += memory
                vcpus += vm.spec.vcpus
                count += 1
        return allocated, provisioned, vcpus, count
