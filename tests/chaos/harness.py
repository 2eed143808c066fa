"""An in-process PVC cluster for chaos trials and one-copy regression tests.

``ChaosCluster`` runs N real ``controllers.daemon.Daemon`` objects (node agent, VM controller,
election, and on the primary the scheduler, drain and fencing) in threads of this process,
against one real ZooKeeper server or ensemble (a fresh root per cluster) and one
``HypervisorWorld`` (``hypervisor/faulty.py``): the truth of what every simulated host holds.

What stands between a daemon and the rest, so faults can be injected:

- ``ZkProxy``: each daemon incarnation talks to ZooKeeper through its own TCP forwarder,
  which sends each new connection to the next member of the ensemble that accepts it (a
  member that is down is skipped), so a daemon whose member dies reconnects to another.
  ``cut()`` drops every connection and refuses new ones (a network partition: the daemon
  keeps running, its domains too), ``stall()`` stops forwarding without closing (a paused
  process), ``heal()`` undoes either, ``close()`` is for good (a dead process).
- ``Gate``: each incarnation's driver and fence agents pass through one gate. Dead: every
  call raises (a crashed process acts on nothing, though its threads linger); paused: every
  call blocks until resumed, then goes ahead (a SIGSTOPped process does exactly what it was
  about to do, late).
- ``DriverHooks``: a callback before or after any driver call of any node (``start`` on
  ``n2`` for ``vm1``...), in the calling thread: how a test injects a fault at a precise moment.

Faults: ``kill`` (crash: gate dead, ``world.cut``, proxy closed: the session expires, the
host's domains stay until the fence powers the node off; power on starts a NEW Daemon, like a
reboot), ``pause``/``resume``, ``expire_session``, ``partition``/``heal_partition``, guest
faults on the world (``world.crash``/``pause``), ``power_cycle`` (an admin reboot), and on an
ensemble ``stop_member``/``start_member`` (kill -9 one ZooKeeper member and start it again; never
more than a minority down at once, so a quorum remains; ``leader_member`` says which one leads).

The invariant monitor (a thread, every 20 ms) records: the world's one-copy violations (the
world checks at every transition), two daemons acting as primary in one epoch (two primaries
in different epochs at once only as information), and the holders of every VM as they change
(the transition log printed with a failure). ``check_specs`` and ``wait_converged`` are the
end-of-trial checks.

A regression test (the ``zookeeper`` fixture of tests/conftest.py gives the server)::

    with ChaosCluster(zookeeper, tmp_path, nodes=3) as c:
        c.apply_vm("v1", ignore_acpi=True, shutdown_timeout="5s")
        source = c.wait_running("v1")                    # by the world's truth
        target = next(n for n in c.slots if n != source)
        # the moment a start begins on the source, a migrate lands (runs in the driver's thread)
        c.hooks.before("start", lambda node, op, vm: c.verb("vms", "v1", "migrate", node=target),
                       node=source, vm="v1")
        assert c.verb("vms", "v1", "start") == 200       # or stop, move, unmigrate; nodes flush...
        c.kill(target)                                   # or pause, partition, expire_session
        ok, seconds, gaps = c.wait_converged(30)
        assert ok, gaps
        assert c.failures() == [], c.world.format_transitions()
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi.testclient import TestClient
from kazoo.client import KazooClient

from api.app import create_app
from api.config import Settings
from controllers.config import DaemonConfig
from controllers.daemon import Daemon
from hypervisor import DomainState
from hypervisor.faulty import HypervisorWorld, Timings
from hypervisor.fence import FenceAgent
from hypervisor.testdriver import write_test_host_xml
from schemas import (
    FenceConfig,
    Node,
    NodeStatus,
    RouterState,
    RunStrategy,
    VirtualMachine,
    VirtualMachineStatus,
)
from tests.chaos.gates import CallLog, DriverHooks, Gate, GatedAgent, GatedDriver, HookFn
from tests.chaos.members import EnsembleMembers
from tests.chaos.monitor import InvariantMonitor
from tests.chaos.nodes import Incarnation, NodeSlot
from tests.chaos.timings import ChaosTimings
from tests.chaos.zkproxy import ZkProxy
from zkstore import NotFound, Store
from zkstore.acl import ADMIN, COORDINATOR, NODE, ROLES, Identity
from zkstore.secure import write_identities

if TYPE_CHECKING:
    from localcluster.zookeeper import ZooKeeperServer

log = logging.getLogger("chaos")

__all__ = [
    "CallLog",
    "ChaosCluster",
    "ChaosTimings",
    "DriverHooks",
    "Gate",
    "GatedAgent",
    "GatedDriver",
    "HookFn",
    "HypervisorWorld",
    "Incarnation",
    "InvariantMonitor",
    "NodeSlot",
    "Timings",
    "ZkProxy",
    "vm_manifest",
]


# -- the cluster ------------------------------------------------------------------------


def vm_manifest(
    name: str,
    *,
    memory: str = "64Mi",
    shutdown_timeout: str = "3s",
    run_strategy: str = "Always",
    **spec: Any,
) -> dict[str, Any]:
    return {
        "apiVersion": "pvc/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": name},
        "spec": {
            "memory": memory,
            "shutdownTimeout": shutdown_timeout,
            "runStrategy": run_strategy,
            **spec,
        },
    }


class ChaosCluster(EnsembleMembers):
    """N real daemons in this process over one ZooKeeper root and one hypervisor world.

    ``zookeeper`` is one server or the members of an ensemble (``start_ensemble``); with an
    ensemble, the cluster's own store, the API and session expiry use every member, and each
    daemon's proxy sends its connections to the members in rotation.

    Use as a context manager (``with ChaosCluster(zk, tmp_path) as cluster:``): entering
    starts ZooKeeper's root, the API, the daemons and the monitor, and waits for a primary."""

    def __init__(
        self,
        zookeeper: ZooKeeperServer | Sequence[ZooKeeperServer],
        workdir: Path,
        *,
        nodes: int = 4,
        coordinators: int | None = None,
        timings: ChaosTimings | None = None,
        world: HypervisorWorld | None = None,
        node_memory_mib: int = 4096,
        live_migration: bool = False,
    ) -> None:
        self.members: list[ZooKeeperServer] = (
            list(zookeeper) if isinstance(zookeeper, Sequence) else [zookeeper]
        )
        if not self.members:
            raise ValueError("ChaosCluster needs a ZooKeeper server")
        self.zookeeper = self.members[0]
        self.members_down: set[int] = set()
        """Indexes of the members stopped by ``stop_member`` and not yet serving again."""
        self._members_lock = threading.Lock()
        self._members_restarting: set[int] = set()
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.live_migration = live_migration
        """Each node publishes a migrationUri, so moves may go live (the world migrates between
        its hosts); without it every move is a shutdown move, as on the bare test driver."""
        self.timings = timings or ChaosTimings()
        self.root = f"/chaos-{uuid.uuid4().hex[:12]}"
        self.world = world or HypervisorWorld(Timings(start=0.6, shutdown=1.0, destroy=1.5))
        self.hooks = DriverHooks()
        self.calls = CallLog()
        self.known_vms: set[str] = set()
        """Every VM name ever applied (the monitor follows their holders)."""
        self.expected_vms: set[str] = set()
        """Applied and not deleted: these specs must still exist."""
        self.deleted_vms: set[str] = set()
        self.closing = False
        self._lock = threading.RLock()
        self._numbers = itertools.count(1)
        count_coordinators = nodes if coordinators is None else coordinators
        self.slots: dict[str, NodeSlot] = {}
        for i in range(1, nodes + 1):
            name = f"n{i}"
            uri = write_test_host_xml(self.workdir / f"{name}-host.xml", node_memory_mib, 4)
            self.slots[name] = NodeSlot(name, i <= count_coordinators, uri)
        self.world.on_power(self._on_power)
        # ACLs on, as in production: the harness (and its in-process API) is admin; each
        # daemon connects as coordinator or node, as its slot is.
        self.identities = {role: Identity(role, uuid.uuid4().hex) for role in ROLES}
        self.store = Store(
            self.zk_hosts,
            self.root,
            timeout=10.0,
            auth=self.identities[ADMIN],
            identities={role: identity.digest for role, identity in self.identities.items()},
        )
        self.monitor = InvariantMonitor(self)
        self._client: TestClient | None = None

    # -- lifecycle ------------------------------------------------------------

    def __enter__(self) -> ChaosCluster:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def start(self, timeout: float = 30.0) -> None:
        self.store.start()
        write_identities(self.store, self.store.client.acl_policy.digests)
        app = create_app(Settings(zookeeper=self.zk_hosts, root=self.root), self.store)
        self._client = TestClient(app, raise_server_exceptions=False)
        self._client.__enter__()
        self.apply(self.timings.cluster_object())
        self.monitor.start()
        for slot in self.slots.values():
            self._boot(slot)
        self.wait_for(lambda: self.primary() is not None, timeout, "a primary")
        self.wait_for(self._all_registered, timeout, "every node registered")

    def close(self) -> None:
        self.closing = True
        with contextlib.suppress(Exception):
            self.monitor.stop()
        self.hooks.clear()
        incs = self.incarnations()
        for inc in incs:
            inc.gate.kill()  # nothing acts on a hypervisor from here on
        for inc in incs:
            if inc.daemon is not None:
                inc.proxy.heal()
                inc.daemon.stopped.set()
        for inc in incs:
            if inc.thread is not None:
                inc.thread.join(20)
        for inc in incs:
            inc.proxy.close()
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.__exit__(None, None, None)
        with contextlib.suppress(Exception):
            self.store.client.delete(self.root, recursive=True)
        with contextlib.suppress(Exception):
            self.store.stop()
        with contextlib.suppress(Exception):
            self.world.close()
        for index in self._members_down_now():  # the ensemble may serve the next cluster
            with contextlib.suppress(Exception):
                self.start_member(index)

    @property
    def zk_hosts(self) -> str:
        """Every member's address, for a client that may use any of them."""
        return ",".join(m.hosts for m in self.members)

    def incarnations(self) -> list[Incarnation]:
        with self._lock:
            return [inc for slot in self.slots.values() for inc in slot.incarnations]

    def _config(self, slot: NodeSlot, proxy: ZkProxy) -> DaemonConfig:
        t = self.timings
        identity = self.identities[COORDINATOR if slot.coordinator else NODE]
        return DaemonConfig.model_validate(
            {
                "node": slot.name,
                "zookeeper": proxy.hosts,
                "root": self.root,
                "coordinator": slot.coordinator,
                "zookeeperAuth": {"user": identity.user, "password": identity.password},
                "libvirt": {
                    "uri": slot.uri,
                    "diskDir": str(self.workdir / "disks"),
                    **(
                        {"migrationUri": f"qemu+tcp://{slot.name}/system"}
                        if self.live_migration
                        else {}
                    ),
                },
                "workers": 2,
                "metrics": {"port": 0},  # several daemons in one process: no endpoint
                # Simulated hosts in one process: no bridges, gateways or DHCP servers.
                "network": {"manage": False, "runDir": str(self.workdir / slot.name / "run")},
                "resyncPeriod": f"{t.resync_period:g}s",
                "sessionTimeout": f"{t.session_timeout:g}s",
                "stateDir": str(self.workdir / slot.name),
                "crashLoop": {
                    "base": f"{t.crash_loop_base:g}s",
                    "cap": f"{t.crash_loop_cap:g}s",
                    "resetAfter": "20s",
                },
                # Not "none", so the fencing controller asks the agent factory (which
                # ignores this and hands out the world's agent).
                "fence": {"agent": "exec", "command": ["/bin/false"]},
            }
        )

    def _boot(self, slot: NodeSlot) -> Incarnation:
        """Start a new daemon on ``slot`` (first boot or a reboot)."""
        with self._lock:
            number = next(self._numbers)
            inc = Incarnation(
                slot.name,
                number,
                Gate(f"{slot.name}#{number}"),
                ZkProxy([m.port for m in self.members], f"{slot.name}#{number}", first=number - 1),
            )
            slot.incarnations.append(inc)
            slot.current = inc
            slot.killed = False
        with contextlib.suppress(Exception):
            self.world.uncut(slot.name)
        self.calls.add(f"boot {inc.name}")
        inc.thread = threading.Thread(
            target=self._run_daemon, args=(slot, inc), name=f"daemon-{inc.name}", daemon=True
        )
        inc.thread.start()
        return inc

    def _run_daemon(self, slot: NodeSlot, inc: Incarnation) -> None:
        """Like systemd: a daemon that exits with an error is started again after 1 s."""
        config = self._config(slot, inc.proxy)
        while inc.alive and not self.closing:
            inner = self.world.driver(slot.name, slot.uri)
            driver = GatedDriver(inner, slot.name, inc.number, inc.gate, self.hooks, self.calls)
            daemon = Daemon(config, driver=driver, fence_agents=self._agents_for(inc))
            inc.daemon = daemon
            try:
                daemon.run()
                break  # an orderly stop
            except Exception as exc:
                inc.errors.append(repr(exc))
                log.warning("event=chaos_daemon_failed node=%s error=%r", inc.name, exc)
                self.calls.add(f"daemon {inc.name} failed: {exc!r}")
                self._scrap(daemon)
                time.sleep(1.0)
        inc.ended = True

    def _agents_for(self, inc: Incarnation) -> Callable[[str, FenceConfig], FenceAgent | None]:
        """The fence agents an incarnation uses: the world's, through its gate (the node's
        configured agent is ignored)."""

        def agent(node: str, _config: FenceConfig) -> FenceAgent | None:
            return GatedAgent(self.world.agent(node), inc.gate, node, self.calls)

        return agent

    @staticmethod
    def _scrap(daemon: Daemon) -> None:
        """Stop what a failed or dead daemon left running; its ZooKeeper client first, so
        none of the rest can reach ZooKeeper while it stops."""
        with contextlib.suppress(Exception):
            daemon.store.stop()
        for stop in (
            lambda: daemon.election.stop(timeout=1.0) if daemon.election else None,
            daemon.vms.stop,
            daemon.agent.stop,
            daemon.metrics.stop,
            daemon.driver.close,
        ):
            with contextlib.suppress(Exception):
                stop()

    def _on_power(self, node: str, on: bool) -> None:
        """The world's power changes: off kills the daemon there, on boots a new one."""
        slot = self.slots.get(node)
        if slot is None or self.closing:
            return
        self.calls.add(f"power {node} {'on' if on else 'off'}")
        if not on:
            self._abandon(slot)
            return
        with self._lock:
            current = slot.current
            booting = current is not None and current.alive
        if not booting:
            # Not on the caller's thread: that may be the primary's fencing thread.
            threading.Thread(target=self._boot, args=(slot,), daemon=True).start()

    def _abandon(self, slot: NodeSlot) -> None:
        """The daemon of ``slot`` dies: it acts on nothing, its connections close for good
        (its session expires in ZooKeeper), and its threads are stopped in the background."""
        with self._lock:
            inc = slot.current
            if inc is None or not inc.alive:
                return
            inc.gate.kill()
            inc.proxy.close()
        self.calls.add(f"dead {inc.name}")
        daemon = inc.daemon
        if daemon is not None:

            def scrap() -> None:
                self._scrap(daemon)
                daemon.stopped.set()

            threading.Thread(target=scrap, name=f"scrap-{inc.name}", daemon=True).start()

    # -- faults ------------------------------------------------------------------

    def current(self, node: str) -> Incarnation | None:
        inc = self.slots[node].current
        return inc if inc is not None and inc.alive else None

    def daemon(self, node: str) -> Daemon:
        """The daemon of ``node``'s live incarnation."""
        inc = self.current(node)
        if inc is None or inc.daemon is None:
            raise LookupError(f"no daemon runs on {node}")
        return inc.daemon

    def kill(self, node: str) -> bool:
        """Crash the daemon (not the host): its domains stay held until a fence powers the
        node off; power on boots a new daemon. False when nothing runs there."""
        slot = self.slots[node]
        if self.current(node) is None:
            return False
        with contextlib.suppress(Exception):
            self.world.cut(node)
        slot.killed = True
        self._abandon(slot)
        return True

    def pause(self, node: str) -> Incarnation | None:
        """Freeze the daemon: no ZooKeeper traffic, driver and fence calls wait."""
        inc = self.current(node)
        if inc is None:
            return None
        inc.gate.pause()
        inc.proxy.stall()
        self.calls.add(f"pause {inc.name}")
        return inc

    def resume(self, inc: Incarnation) -> None:
        """Undo ``pause`` (and any partition of that incarnation)."""
        if not inc.alive:
            return
        frozen = inc.gate.paused or inc.proxy.stalled or inc.proxy.cut_off
        inc.proxy.heal()
        inc.gate.resume()
        if frozen:
            self.calls.add(f"resume {inc.name}")

    def partition(self, node: str) -> Incarnation | None:
        """Cut the daemon off from ZooKeeper; it and its domains keep running."""
        inc = self.current(node)
        if inc is None:
            return None
        inc.proxy.cut()
        self.calls.add(f"partition {inc.name}")
        return inc

    def heal_partition(self, inc: Incarnation) -> None:
        if inc.alive:
            inc.proxy.heal()
            self.calls.add(f"heal partition {inc.name}")

    def expire_session(self, node: str) -> bool:
        """Expire the daemon's ZooKeeper session (kazoo's trick: a second client with the
        same session id and password connects and closes it)."""
        inc = self.current(node)
        if inc is None or inc.daemon is None:
            return False
        client_id = inc.daemon.store.client.client_id
        if not client_id:
            return False
        other = KazooClient(
            hosts=self.zk_hosts,
            client_id=client_id,
            timeout=self.timings.session_timeout,
        )
        try:
            other.start(timeout=5)
        except Exception:
            return False
        finally:
            with contextlib.suppress(Exception):
                other.stop()
                other.close()
        self.calls.add(f"expire session {inc.name} 0x{client_id[0]:x}")
        return True

    def boot(self, node: str) -> Incarnation:
        """Start the node's daemon again after it stopped (a ``systemctl restart``); its
        host and domains are untouched."""
        return self._boot(self.slots[node])

    def power_cycle(self, node: str) -> None:
        """An admin resets the host: everything on it is gone, a new daemon boots."""
        self.world.power_off(node)
        self.world.power_on(node)

    def primary(self) -> str | None:
        """The node whose live daemon acts as primary (the one with the highest epoch)."""
        best: tuple[int, str] | None = None
        for inc in self.incarnations():
            daemon = inc.daemon
            if not inc.alive or inc.gate.paused or daemon is None or daemon.election is None:
                continue
            if daemon.election.state == RouterState.PRIMARY and daemon.election.epoch is not None:
                if best is None or daemon.election.epoch > best[0]:
                    best = (daemon.election.epoch, inc.node)
        return best[1] if best else None

    # -- the API ---------------------------------------------------------------------

    @property
    def client(self) -> TestClient:
        assert self._client is not None, "the cluster is not started"
        return self._client

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        """A request to the real API app (in process, on this cluster's root)."""
        return self.client.request(method, path, **kwargs)

    def apply(self, *objects: dict[str, Any]) -> None:
        response = self.api("POST", "/api/v1/apply", json=list(objects))
        if response.status_code != 200:
            raise AssertionError(f"apply: {response.status_code} {response.text}")
        for obj in objects:
            if obj.get("kind") == "VirtualMachine":
                name = obj["metadata"]["name"]
                self.known_vms.add(name)
                self.expected_vms.add(name)
                self.deleted_vms.discard(name)

    def apply_vm(self, name: str, *, ignore_acpi: bool = False, **spec: Any) -> None:
        """Apply a small VM (``vm_manifest``); ``ignore_acpi``: its guest never powers off
        on ACPI, only at shutdownTimeout."""
        if ignore_acpi:
            self.world.ignore_acpi(name)
        self.apply(vm_manifest(name, **spec))

    def delete_vm(self, name: str) -> int:
        response = self.api("DELETE", f"/api/v1/vms/{name}")
        if response.status_code in (200, 202, 404):
            self.expected_vms.discard(name)
            self.deleted_vms.add(name)
        return int(response.status_code)

    def verb(self, kind: str, name: str, verb: str, **body: Any) -> int:
        """``verb("vms", "v1", "migrate", node="n2")``, ``verb("nodes", "n1", "flush")``."""
        response = self.api("POST", f"/api/v1/{kind}/{name}/{verb}", json=body or None)
        return int(response.status_code)

    # -- truth --------------------------------------------------------------------------

    def _all_registered(self) -> bool:
        return set(self.store.names(Node)) >= set(self.slots)

    def running_on(self, vm: str) -> str | None:
        """The node whose hypervisor runs ``vm`` as its only holder, by the world's truth."""
        holders = self.world.holders(vm)
        if len(holders) != 1:
            return None
        (node,) = holders
        return node if self.world.domain_state(node, vm) == DomainState.RUNNING else None

    def wait_running(self, vm: str, timeout: float = 30.0, node: str | None = None) -> str:
        """Wait until ``vm`` runs on exactly one node (``node``, when given); return it."""
        found = self.wait_for(
            lambda: (where := self.running_on(vm)) and (node is None or where == node) and where,
            timeout,
            f"{vm} running" + (f" on {node}" if node else ""),
        )
        return str(found)

    def vm_status(self, vm: str) -> VirtualMachineStatus:
        """The VM's stored status as written (empty when it has none)."""
        return VirtualMachineStatus.model_validate(self.store.read_status(VirtualMachine, vm) or {})

    def node_status(self, node: str) -> NodeStatus:
        """The Node's stored status as written (empty when it has none)."""
        return NodeStatus.model_validate(self.store.read_status(Node, node) or {})

    def placement_of(self, vm: str) -> str | None:
        placement = self.store.read_placement(vm)
        return placement.node if placement else None

    def failures(self) -> list[str]:
        """Every invariant broken so far: one-copy violations (the world's, exact), two
        primaries in one epoch. A regression test asserts this is empty."""
        self.monitor.poll()
        return list(self.monitor.failures)

    def check_specs(self) -> list[str]:
        """No spec lost: every VM applied and not deleted still exists."""
        present = set(self.store.names(VirtualMachine))
        return [
            f"SPEC LOST: {vm} was applied and never deleted"
            for vm in sorted(self.expected_vms - present)
        ]

    def convergence_gaps(self) -> list[str]:
        """What still differs from a converged cluster (empty when converged): every Always
        VM runs on its placement's node only, Halted and deleted VMs are held nowhere."""
        gaps: list[str] = []
        for vm in sorted(self.known_vms):
            holders = self.world.holders(vm)
            try:
                spec = self.store.get(VirtualMachine, vm)
            except NotFound:
                if holders:
                    gaps.append(f"{vm}: deleted, still held by {sorted(holders)}")
                continue
            if spec.spec.run_strategy != RunStrategy.ALWAYS:
                if holders:
                    gaps.append(f"{vm}: {spec.spec.run_strategy}, still held by {sorted(holders)}")
                continue
            placed = self.placement_of(vm)
            running = self.running_on(vm)
            if placed is None or running != placed or holders != {placed}:
                gaps.append(
                    f"{vm}: placed on {placed}, held by {sorted(holders)}, running on {running}"
                )
        return gaps

    def wait_converged(self, timeout: float | None = None) -> tuple[bool, float, list[str]]:
        """(converged, seconds it took, what differed last)."""
        bound = self.timings.converge_bound if timeout is None else timeout
        started = time.monotonic()
        gaps = self.convergence_gaps()
        while gaps and time.monotonic() - started < bound:
            time.sleep(0.2)
            gaps = self.convergence_gaps()
        return not gaps, time.monotonic() - started, gaps

    @staticmethod
    def wait_for(check: Callable[[], Any], timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            result = check()
            if result:
                return result
            if time.monotonic() >= deadline:
                raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")
            time.sleep(0.05)

    # -- healing -----------------------------------------------------------------------------

    def heal_all(self, reboot_wait: float | None = None) -> list[str]:
        """End every fault: resume and reconnect every live daemon, resume paused guests, uncut
        hypervisors; a crashed node the cluster has not rebooted within ``reboot_wait`` (fence
        window + session + 5 s) is power-cycled by hand. Returns what it did."""
        done: list[str] = []
        for index in self._members_down_now():
            if self.start_member(index):
                done.append(f"start zk member {index + 1}")
        for slot in self.slots.values():
            inc = self.current(slot.name)
            if inc is not None and not slot.killed:
                if inc.gate.paused or inc.proxy.stalled or inc.proxy.cut_off:
                    done.append(f"resume/reconnect {inc.name}")
                self.resume(inc)
        for slot in self.slots.values():
            for vm in self.world.held_by(slot.name):
                self.world.resume(slot.name, vm)  # a no-op unless paused
        wait = (
            self.timings.fence_after + self.timings.session_timeout + 5.0
            if reboot_wait is None
            else reboot_wait
        )
        deadline = time.monotonic() + wait
        while any(s.killed for s in self.slots.values()) and time.monotonic() < deadline:
            time.sleep(0.1)
        for slot in self.slots.values():
            if slot.killed:
                done.append(f"power-cycle {slot.name} (crashed, not rebooted within {wait:g}s)")
                self.power_cycle(slot.name)
            elif not self.world.powered(slot.name):
                done.append(f"power on {slot.name}")
                self.world.power_on(slot.name)
        return done

    def ready_all(self) -> list[str]:
        """Clear every node's drain flag (flushes are operations, not faults, but a cluster
        left flushed everywhere cannot run anything)."""
        readied = []
        for node in self.store.list(Node):
            if node.spec.drain and self.verb("nodes", node.name, "ready") == 200:
                readied.append(node.name)
        return readied
