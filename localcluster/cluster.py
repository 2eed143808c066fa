"""A local cluster on one machine: one ZooKeeper, N pvcnoded on libvirt test-driver hosts,
one pvcapid. Every process is started detached and stopped by the PID it recorded."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
import yaml

from localcluster import observe
from localcluster.process import (
    free_port,
    how_it_ended,
    is_ours,
    pid_alive,
    processes_naming,
    signal_ours,
    spawn,
    stop_pid,
    wait_until,
)
from localcluster.zkauth import (
    SecureStoreError,
    auth_config,
    make_passwords,
    start_secure_store,
)
from localcluster.zookeeper import ZooKeeperServer, start_ensemble


def default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(os.environ.get("PVC_LOCAL_DIR") or Path(base) / "pvc-local")


@dataclass
class LocalState:
    zookeeper_port: int = 0
    zookeeper_pid: int = 0
    api_port: int = 0
    api_pid: int = 0
    nodes: dict[str, int] = field(default_factory=dict)
    root: str = "/pvc"
    # Every ZooKeeper member as [client, quorum, election] ports and PID; the two fields
    # above name the first member.
    zookeeper_members: list[list[int]] = field(default_factory=list)
    zookeeper_pids: list[int] = field(default_factory=list)
    # Each node's daemon ``network`` settings, kept so a power cycle restarts it the same.
    node_networks: dict[str, dict[str, object]] = field(default_factory=dict)
    # Each node's pvcnoded metrics port (127.0.0.1), one of its own, kept across restarts.
    metrics_ports: dict[str, int] = field(default_factory=dict)

    @property
    def zookeeper_hosts(self) -> str:
        ports = [m[0] for m in self.zookeeper_members] or [self.zookeeper_port]
        return ",".join(f"127.0.0.1:{p}" for p in ports)


class LocalClusterError(RuntimeError):
    pass


class LocalCluster:
    def __init__(
        self,
        state_dir: Path | None = None,
        *,
        nodes: int = 3,
        api_port: int = 7370,
        node_memory: str = "8Gi",
        node_cpus: int = 4,
        session_timeout: str = "6s",
        libvirt_uris: dict[str, str] | None = None,
        disk_dir: Path | None = None,
        zookeeper_members: int = 1,
        node_networks: dict[str, dict[str, object]] | None = None,
        node_config: dict[str, dict[str, object]] | None = None,
        coordinators: int | None = None,
        nodes_per_process: int = 1,
    ) -> None:
        """``coordinators``: how many nodes (the first ones) are coordinators; all by default.
        ``nodes_per_process`` > 1 runs the other nodes that many to a process
        (``controllers.simhost``: many simulated nodes on a small machine); a coordinator
        always has a process of its own. Powering off a node of such a process kills every
        node in it.
        ``node_config`` maps node names to more settings of their daemon's config file
        (e.g. ``flushOnShutdown``).
        ``libvirt_uris`` maps node names to real libvirt URIs (e.g. qemu:///system);
        nodes not named there simulate their host with libvirt's test driver.
        ``node_networks`` maps node names to their daemon's ``network`` settings (a
        namespace standing for the host's network, floating addresses)."""
        self.dir = (state_dir or default_state_dir()).absolute()
        self.node_count = nodes
        self.api_port = api_port
        self.node_memory = node_memory
        self.node_cpus = node_cpus
        self.session_timeout = session_timeout
        self.libvirt_uris = libvirt_uris or {}
        self.zookeeper_members = zookeeper_members
        self.disk_dir = disk_dir
        self.node_networks = node_networks or {}
        self.node_config = node_config or {}
        self.coordinators = nodes if coordinators is None else coordinators
        self.nodes_per_process = max(1, nodes_per_process)

    # -- state file ----------------------------------------------------------

    @property
    def state_file(self) -> Path:
        return self.dir / "state.json"

    @property
    def api_config(self) -> Path:
        return self.dir / "api.yaml"

    def load_state(self) -> LocalState | None:
        try:
            return LocalState(**json.loads(self.state_file.read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def save_state(self, state: LocalState) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(state), indent=2))
        tmp.replace(self.state_file)

    @staticmethod
    def server_url(state: LocalState) -> str:
        return f"http://127.0.0.1:{state.api_port}"

    @staticmethod
    def metrics_url(state: LocalState, node: str) -> str:
        """Where node ``node``'s pvcnoded serves its Prometheus metrics."""
        return f"http://127.0.0.1:{state.metrics_ports[node]}/metrics"

    # -- health ----------------------------------------------------------------

    def _ours(self, pid: int, marker: str) -> bool:
        """A recorded PID counts only if it is still our process (PIDs get reused)."""
        return is_ours(pid, marker)

    def marker(self, component: str) -> str:
        """What the command line of ``component`` (a node, ``api``, ``zookeeper[N]``) names."""
        if component == "api":
            return str(self.api_config)
        if component.startswith("zookeeper"):
            return str(self.dir / component)
        return str(self.dir / f"{component}.yaml")

    def pid(self, component: str) -> int:
        """The PID of a running ``component`` of this cluster, checked to be still ours."""
        state = self.load_state()
        if state is None:
            raise LocalClusterError(f"no local cluster in {self.dir}")
        if component == "api":
            pid = state.api_pid
        elif component == "zookeeper":
            pid = state.zookeeper_pid
        elif component.startswith("zookeeper") and state.zookeeper_pids:
            index = int(component.removeprefix("zookeeper") or "1")
            pid = state.zookeeper_pids[index - 1]
        elif component in state.nodes:
            pid = state.nodes[component]
        else:
            raise LocalClusterError(f"no local component {component!r}")
        if not self._ours(pid, self.marker(component)):
            raise LocalClusterError(f"{component} does not run (pid {pid} is not ours)")
        return pid

    def signal(self, component: str, signum: int) -> int:
        """Send ``signum`` to ``component``'s process if it is still ours; returns its PID."""
        pid = self.pid(component)
        if not signal_ours(pid, signum, self.marker(component)):
            raise LocalClusterError(f"{component} (pid {pid}) exited before the signal")
        return pid

    def _pids(self, state: LocalState) -> dict[str, int]:
        """Each component's recorded PID: ``api``, ``zookeeper`` (or ``zookeeper1``...), nodes."""
        pids = {"api": state.api_pid}
        if state.zookeeper_pids:
            pids.update({f"zookeeper{i}": p for i, p in enumerate(state.zookeeper_pids, start=1)})
        else:
            pids["zookeeper"] = state.zookeeper_pid
        pids.update(state.nodes)
        return pids

    def running(self, state: LocalState) -> dict[str, bool]:
        return {name: self._ours(pid, self.marker(name)) for name, pid in self._pids(state).items()}

    def api_healthy(self, state: LocalState) -> bool:
        try:
            return httpx.get(f"{self.server_url(state)}/healthz", timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False

    # -- up / down -------------------------------------------------------------

    def up(self, timeout: float = 120.0) -> tuple[LocalState, bool]:
        """Start the cluster, or reuse it when all of it is running. Returns (state, reused)."""
        state = self.load_state()
        if state is not None:
            health = self.running(state)
            if (
                all(health.values())
                and len(state.nodes) == self.node_count
                and self.api_healthy(state)
            ):
                return state, True
            self.down()  # partly running: start clean rather than guess
        self.dir.mkdir(parents=True, exist_ok=True)
        state = LocalState(api_port=self.api_port or free_port(), node_networks=self.node_networks)
        try:
            if self.zookeeper_members > 1:
                members = start_ensemble(self.dir, self.zookeeper_members, timeout)
                state.zookeeper_members = [list(p) for p in members[0].ensemble or []]
                state.zookeeper_pids = [m.pid or 0 for m in members]
                state.zookeeper_pid, state.zookeeper_port = state.zookeeper_pids[0], members[0].port
            else:
                zookeeper = ZooKeeperServer(self.dir / "zookeeper")
                zookeeper.start(timeout=timeout)
                assert zookeeper.pid is not None
                state.zookeeper_pid, state.zookeeper_port = zookeeper.pid, zookeeper.port
            self.save_state(state)
            make_passwords(self.dir)
            securing = start_secure_store(self.dir, state.zookeeper_hosts, state.root, timeout)
            for group in self.process_groups():
                pid = self._start_nodes(group, state)
                state.nodes.update(dict.fromkeys(group, pid))
                self.save_state(state)
            try:
                securing.finish()
            except SecureStoreError as exc:
                raise LocalClusterError(str(exc)) from None
            self._start_api(state, timeout)
            wait_until(
                lambda: self._check_alive(state) and self._nodes_ready(state),
                timeout,
                f"{self.node_count} Ready nodes (see {self.dir}/node*.log)",
                0.2,
            )
            self._ensure_shared_pool(state)
        except BaseException:
            self.down()
            raise
        return state, False

    def shared_pool_dir(self) -> Path:
        """The folder of the local cluster's ``shared`` StoragePool: one folder every node
        reaches, as an NFS mount would be (inside the disk folder, which QEMU may read)."""
        return Path(self.disk_dir or self.dir / "disks") / "pool-shared"

    def _ensure_shared_pool(self, state: LocalState) -> None:
        """Create StoragePool ``shared`` (type shared) when there is none."""
        folder = self.shared_pool_dir()
        folder.mkdir(parents=True, exist_ok=True)
        pool = {
            "apiVersion": "pvc/v1",
            "kind": "StoragePool",
            "metadata": {"name": "shared"},
            "spec": {"type": "shared", "path": str(folder)},
        }
        url = f"{self.server_url(state)}/api/v1/storagepools"
        answer = httpx.post(url, json=pool, timeout=10.0)
        if answer.status_code not in (201, 409):
            raise LocalClusterError(f"creating StoragePool shared: {answer.text}")

    def _start_api(self, state: LocalState, timeout: float) -> None:
        # A port we picked that another process took before uvicorn bound it: pick again.
        for attempt in range(3):
            # The config file names this cluster's folder on the command line, so a
            # teardown can tell our API from any other (see _stop_strays).
            self.api_config.write_text(
                yaml.safe_dump(
                    {
                        "zookeeper": state.zookeeper_hosts,
                        "root": state.root,
                        "zookeeperAuth": auth_config(self.dir, "api"),
                    }
                )
            )
            state.api_pid = spawn(
                [
                    sys.executable,
                    "-m",
                    "api.server",
                    "--config",
                    str(self.api_config),
                    "--port",
                    str(state.api_port),
                ],
                self.dir / "api.log",
                env={"PVC_ZOOKEEPER": state.zookeeper_hosts, "PVC_ROOT": state.root},
            )
            self.save_state(state)
            try:
                wait_until(
                    # Our process's answer: another's that took the port (a local cluster
                    # of another test) answers /healthz as well, while ours fails to bind.
                    lambda: (
                        self._check_alive(state)
                        and observe.listens_on(state.api_pid, state.api_port)
                        and self.api_healthy(state)
                    ),
                    timeout,
                    f"the API on port {state.api_port} (see {self.dir / 'api.log'})",
                    0.2,
                )
                return
            except LocalClusterError:
                api_died = not self._ours(state.api_pid, str(self.api_config))
                if not (api_died and not self.api_port and attempt < 2):
                    raise
                state.api_port = free_port()

    def _check_alive(self, state: LocalState) -> bool:
        dead = [name for name, ok in self.running(state).items() if not ok]
        if dead:
            pids = self._pids(state)
            how = [
                f"{name} ({ended})" if (ended := how_it_ended(pids.get(name, 0))) else name
                for name in dead
            ]
            raise LocalClusterError(f"{', '.join(how)} exited during start; logs are in {self.dir}")
        return True

    def _nodes_ready(self, state: LocalState) -> bool:
        try:
            items = httpx.get(f"{self.server_url(state)}/api/v1/nodes", timeout=2.0).json()["items"]
        except (httpx.HTTPError, ValueError, KeyError):
            return False
        ready = {
            i["metadata"]["name"]
            for i in items
            for c in (i.get("status") or {}).get("conditions", [])
            if c["type"] == "Ready" and c["status"] == "True"
        }
        return set(state.nodes) <= ready

    def _libvirt_config(self, name: str) -> dict[str, object]:
        # One folder for all nodes, declared shared: a VM's disks go with it when it moves.
        # QEMU runs as libvirt-qemu: real nodes need disks somewhere it may read.
        disks = {"diskDir": str(self.disk_dir or self.dir / "disks"), "sharedDiskDir": True}
        if name in self.libvirt_uris:
            return {"uri": self.libvirt_uris[name], **disks}
        return {
            "uri": "test:///",
            "testHost": {"memory": self.node_memory, "cpus": self.node_cpus},
            **disks,
        }

    def process_groups(self, first: int = 1) -> list[list[str]]:
        """The nodes each process runs, from node ``first`` on: every coordinator alone,
        the others ``nodes_per_process`` to a process."""
        names = [f"node{i}" for i in range(first, self.node_count + 1)]
        groups = [[n] for n in names if self.is_coordinator(n)]
        rest = [n for n in names if not self.is_coordinator(n)]
        step = self.nodes_per_process
        groups += [rest[i : i + step] for i in range(0, len(rest), step)]
        return groups

    def grow(self, nodes: int, timeout: float = 120.0) -> LocalState:
        """Start nodes up to ``nodes`` in all (a running cluster gains hosts) and wait
        until every one is Ready."""
        state = self.load_state()
        if state is None:
            raise LocalClusterError(f"no local cluster in {self.dir}")
        first = self.node_count + 1
        self.node_count = max(nodes, self.node_count)
        for group in self.process_groups(first):
            pid = self._start_nodes(group, state)
            state.nodes.update(dict.fromkeys(group, pid))
            self.save_state(state)
        wait_until(
            lambda: self._check_alive(state) and self._nodes_ready(state),
            timeout,
            f"{self.node_count} Ready nodes (see {self.dir}/node*.log)",
            0.2,
        )
        return state

    def _start_nodes(self, names: list[str], state: LocalState) -> int:
        """Start one process for ``names``: pvcnoded for one node, controllers.simhost for
        several (each node's config file on its command line, so each stays findable)."""
        if len(names) == 1:
            return self._start_node(names[0], state)
        configs = [self._write_node_config(name, state) for name in names]
        argv = [sys.executable, "-m", "controllers.simhost"]
        for config in configs:
            argv += ["--config", str(config)]
        return spawn(argv, self.dir / f"{names[0]}-{names[-1]}.log")

    def is_coordinator(self, name: str) -> bool:
        return int(name.removeprefix("node")) <= self.coordinators

    def _start_node(self, name: str, state: LocalState) -> int:
        config = self._write_node_config(name, state)
        return spawn(
            [sys.executable, "-m", "controllers.daemon", "--config", str(config)],
            self.dir / f"{name}.log",
        )

    def _write_node_config(self, name: str, state: LocalState) -> Path:
        config = self.dir / f"{name}.yaml"
        coordinator = self.is_coordinator(name)
        metrics_port = state.metrics_ports.setdefault(name, free_port())
        config.write_text(
            yaml.safe_dump(
                {
                    "node": name,
                    "zookeeper": state.zookeeper_hosts,
                    "root": state.root,
                    "coordinator": coordinator,
                    # A coordinator may fence, so it reads credentials.
                    "zookeeperAuth": auth_config(
                        self.dir, "coordinator" if coordinator else "node"
                    ),
                    "libvirt": self._libvirt_config(name),
                    # The test driver attaches no NICs: no bridges on the user's host unless a
                    # test gives the node a namespace of its own (manage: true there).
                    "network": {
                        "manage": False,
                        "runDir": str(self.dir / name / "run"),
                        **state.node_networks.get(name, {}),
                    },
                    "stateDir": str(self.dir / name),
                    # The local power agent: "power off" kills the node's processes, as a dead host.
                    "fence": {
                        "agent": "exec",
                        # stdlib-only and started directly: it is on the failover path.
                        "command": [
                            sys.executable,
                            "-m",
                            "localcluster.power",
                            "--state-dir",
                            str(self.dir),
                            name,
                        ],
                    },
                    "sessionTimeout": self.session_timeout,
                    "resyncPeriod": "10s",
                    "logLevel": os.environ.get("PVC_LOG_LEVEL", "info"),
                    "metrics": {"listen": "127.0.0.1", "port": metrics_port},
                    **self.node_config.get(name, {}),
                },
                sort_keys=False,
            )
        )
        return config

    def down(self) -> list[str]:
        """Stop everything recorded, API first and ZooKeeper last; returns what was stopped."""
        state = self.load_state()
        stopped: list[str] = []
        if state is None:
            return stopped
        health = self.running(state)
        if health.get("api"):
            stop_pid(state.api_pid, marker=self.marker("api"))
            stopped.append("api")
        for name, pid in state.nodes.items():
            if health.get(name):
                stop_pid(pid, marker=self.marker(name))
                stopped.append(name)
        for i, pid in enumerate(state.zookeeper_pids or [state.zookeeper_pid], start=1):
            key = f"zookeeper{i}" if state.zookeeper_pids else "zookeeper"
            if health.get(key):
                stop_pid(pid, marker=self.marker(key))
                stopped.append(key)
        self.state_file.unlink(missing_ok=True)
        # A node the fence agent powered on while we were stopping is in no record yet.
        stopped += self._stop_strays()
        self._clear_data()
        return stopped

    def _stop_strays(self) -> list[str]:
        """Stop every daemon, API or DHCP server (a crashed primary's) still running with a
        config from this cluster's folder."""
        stopped = []
        for pid, cmdline in processes_naming(self.dir).items():
            if any(
                what in cmdline
                for what in ("controllers.daemon", "controllers.simhost", "api.server", "dnsmasq")
            ):
                stop_pid(pid, marker=f"{self.dir}/")
                stopped.append(f"stray pid {pid}")
        return stopped

    def _clear_data(self) -> None:
        # A fresh ZooKeeper next time: test-driver hosts lose their domains with their daemons.
        # The volumes in the cluster's own pool go with the records that said whose they
        # were: left behind, the next cluster's VMs of the same names would find them and
        # (rightly) refuse to take over volumes PVC did not make for them (VolumeExists).
        for data in [*self.dir.glob("zookeeper*/data"), self.shared_pool_dir()]:
            for path in sorted(data.rglob("*"), key=lambda p: len(p.parts), reverse=True):
                path.unlink() if path.is_file() or path.is_symlink() else path.rmdir()

    def zookeeper_member(self, index: int) -> ZooKeeperServer:
        """Member ``index`` (1-based) of the ensemble, to stop and start it again in tests."""
        state = self.load_state()
        if state is None or not 1 <= index <= len(state.zookeeper_pids):
            raise LocalClusterError(f"no ZooKeeper member {index}")
        ports = [(m[0], m[1], m[2]) for m in state.zookeeper_members]
        return ZooKeeperServer(
            self.dir / f"zookeeper{index}",
            port=ports[index - 1][0],
            pid=state.zookeeper_pids[index - 1],
            myid=index,
            ensemble=ports,
        )

    def record_zookeeper_pid(self, index: int, pid: int) -> None:
        state = self.load_state()
        if state is None:
            raise LocalClusterError("the local cluster is not running")
        state.zookeeper_pids[index - 1] = pid
        self.save_state(state)

    def power(self, name: str, action: str) -> str:
        """The exec fence agent's backend: off kills the node's daemon (and with it its
        simulated hypervisor), on starts it again, status says which."""
        state = self.load_state()
        if state is None or name not in state.nodes:
            raise LocalClusterError(f"no local node {name!r}")
        alive = self._ours(state.nodes[name], str(self.dir / f"{name}.yaml"))
        if action == "off":
            if alive:
                self.kill_node(name)
            return "off"
        if action == "on":
            self.start_node(name)
            return "on"
        if action == "status":
            return "on" if alive else "off"
        raise LocalClusterError(f"unknown power action {action!r} (on, off, status)")

    def kill_node(self, name: str, signum: int = 9, timeout: float = 5.0) -> None:
        """Send the node's daemon ``signum`` (SIGKILL: a crash; SIGTERM: an orderly stop,
        as systemd's) and wait up to ``timeout`` for it to exit."""
        state = self.load_state()
        if state is None or name not in state.nodes:
            raise LocalClusterError(f"no local node {name!r}")
        pid = state.nodes[name]
        if signal_ours(pid, signum, self.marker(name)):
            wait_until(lambda: not pid_alive(pid), timeout, f"{name} to exit")

    def start_node(self, name: str) -> None:
        state = self.load_state()
        if state is None or name not in state.nodes:
            raise LocalClusterError(f"no local node {name!r}")
        if self._ours(state.nodes[name], str(self.dir / f"{name}.yaml")):
            return
        state.nodes[name] = self._start_node(name, state)
        self.save_state(state)
