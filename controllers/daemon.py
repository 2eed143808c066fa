"""pvcnoded: the daemon on each hypervisor host."""

from __future__ import annotations

import argparse
import faulthandler
import logging
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType

from kazoo.exceptions import KazooException
from kazoo.handlers.threading import KazooTimeoutError

from controllers.config import ConfigError, DaemonConfig, load_config
from controllers.crashloop import CrashLoopPolicy
from controllers.fencing import AgentFactory, configured_agent
from controllers.floating import FloatingAddresses, HeldGroup
from controllers.gateways import NetworkGateways
from controllers.metrics import MetricsServer, NodeSource
from controllers.network_agent import NetworkAgent
from controllers.node_agent import NodeAgent
from controllers.primary import PrimaryElection
from controllers.self_fence import SelfFence
from controllers.storage import PoolProber
from controllers.vm_controller import VMController
from controllers.volume_reaper import VolumeReaper
from hypervisor import DomainDriver, HypervisorError, LibvirtDriver, write_test_host_xml
from hypervisor.hostnet import HostNetworkError, NetlinkHostBridges, NetlinkHostNetwork
from schemas import DomainState, Node, to_mib, to_seconds, utcnow, verbs
from schemas.daemon_logging import setup_logging
from schemas.sdnotify import Notifier
from zkstore import (
    LeaseHeld,
    SchemaMigrationTimeout,
    SchemaTooNew,
    Store,
    StoreError,
    Unavailable,
)

log = logging.getLogger("pvcnoded")


def hypervisor_uri(config: DaemonConfig) -> str:
    """With libvirt.testHost set, the daemon simulates its host with the test driver."""
    if config.libvirt.test_host is None:
        return config.libvirt.uri
    host_file = Path(config.state_dir) / f"{config.node}-host.xml"
    host_file.parent.mkdir(parents=True, exist_ok=True)
    return write_test_host_xml(
        host_file, to_mib(config.libvirt.test_host.memory), config.libvirt.test_host.cpus
    )


def floating_addresses(config: DaemonConfig) -> FloatingAddresses:
    wanted = [fa.floating() for fa in config.network.floating_addresses]
    # Short gaps between the gratuitous ARPs: a takeover waits for them.
    network = (
        NetlinkHostNetwork(config.network.namespace, announce_interval=0.2) if wanted else None
    )
    return FloatingAddresses(network, wanted)


class Daemon:
    """One node's controllers. ``driver`` and ``fence_agents`` replace the libvirt driver and
    the configured fence agents (a harness that injects faults passes its own); ``notifier``
    tells systemd (readiness, watchdog, stopping): by default through ``NOTIFY_SOCKET``."""

    def __init__(
        self,
        config: DaemonConfig,
        *,
        driver: DomainDriver | None = None,
        fence_agents: AgentFactory = configured_agent,
        notifier: Notifier | None = None,
    ) -> None:
        self.config = config
        self.notifier = notifier or Notifier.from_environment()
        self.stopped = threading.Event()
        self.uri = hypervisor_uri(config)
        self.driver = driver or LibvirtDriver(self.uri)
        self.store = Store(
            config.zookeeper,
            config.root,
            timeout=config.session_seconds,
            auth=config.zookeeper_auth.identity() if config.zookeeper_auth else None,
            tls=config.zookeeper_tls,
        )
        self.vms = VMController(
            self.store,
            self.driver,
            config.node,
            disk_dir=config.libvirt.disk_dir,
            shared_disk_dir=config.libvirt.shared_disk_dir,
            workers=config.workers,
            resync_period=config.resync_seconds,
            crash_loop=CrashLoopPolicy(
                base=to_seconds(config.crash_loop.base),
                cap=to_seconds(config.crash_loop.cap),
                reset_after=to_seconds(config.crash_loop.reset_after),
            ),
            on_domains_changed=lambda: self.agent.poke(),
            on_domain_started=lambda: self.agent.poke_soon(),
        )
        self.pools = PoolProber(
            self.store,
            self.driver,
            config.node,
            on_change=lambda: self.agent.poke(),
            interval=to_seconds(config.storage.probe_interval),
        )
        self.reaper = VolumeReaper(self.store, config.node, primary=False)
        self.networks = NetworkAgent(
            self.store,
            config.node,
            config.network,
            NetlinkHostBridges(config.network.namespace) if config.network.manage else None,
            on_change=lambda: self.agent.poke(),
        )
        self.agent = NodeAgent(
            self.store,
            self.driver,
            config.node,
            coordinator=config.coordinator,
            fence=config.fence,
            hypervisor_uri=self.uri,
            disk_dir=config.libvirt.disk_dir,
            shared_disk_dir=config.libvirt.shared_disk_dir,
            migration_uri=config.libvirt.peer_uri(self.uri),
            migration_address=config.libvirt.migration_address,
            allocations=self.vms.allocations,
            lease_wait=config.session_seconds + 5.0,
            on_revived=lambda: self.vms.report_all(),
            pools=self.pools.latest,
            networks=self.networks.latest,
            cluster_address=config.network.cluster.address if config.network.cluster else None,
            on_beat=self.notifier.watchdog,
        )
        self.gateways = NetworkGateways(
            self.store,
            config.node,
            config.network,
            NetlinkHostNetwork(config.network.namespace, announce_interval=0.2)
            if config.coordinator and config.network.manage
            else None,
        )
        self.self_fence = SelfFence(
            self.store,
            self.driver,
            config.node,
            lambda: self.agent.self_fence_after,
            on_fenced=self.vms.self_fenced,
        )
        self.metrics = MetricsServer(
            config.metrics.listen,
            config.metrics.port,
            NodeSource(
                config.node,
                self.driver,
                self.store.root,
                self.agent.heartbeat_age,
                lambda: str(self.store.client.state),
            ),
        )
        self.election = (
            PrimaryElection(
                self.store,
                config.node,
                self.agent.set_router_state,
                addresses=HeldGroup(floating_addresses(config), self.gateways),
                fence_agents=fence_agents,
            )
            if config.coordinator
            else None
        )

    def run(self) -> None:
        log.info(
            "event=starting node=%s zookeeper=%s hypervisor=%s",
            self.config.node,
            self.config.zookeeper,
            self.uri,
        )
        self.metrics.start()
        self.store.start(
            holder=f"pvcnoded/{self.config.node}",
            migration_timeout=to_seconds(self.config.schema_migration_timeout),
        )
        self.notifier.watchdog()  # each start step is bounded (lease wait) well below WatchdogSec
        self.agent.register()
        self.notifier.watchdog()
        self.pools.start()
        self.reaper.start()
        self.networks.start()
        if self.election is not None:
            self.gateways.start()
        self.vms.start()
        self.agent.start()
        if self.election is not None:
            self.election.start()
        self._unflush_after_restart()
        log.info("event=running node=%s", self.config.node)
        self._tell_systemd_ready()
        self.stopped.wait()
        self.shutdown()

    def shutdown(self) -> None:
        log.info("event=stopping node=%s", self.config.node)
        self.notifier.stopping(f"stopping node {self.config.node}")
        if self.config.flush_on_shutdown:
            self._flush_before_stop()
        if self.election is not None:
            self.election.stop()
        self.vms.stop()
        self.agent.stop()
        self.pools.stop()
        self.reaper.stop()
        self.networks.stop()
        self.store.stop()
        self.metrics.stop()
        self.driver.close()
        log.info("event=stopped node=%s", self.config.node)

    def _flush_before_stop(self) -> None:
        """Flush this node and wait (up to ``flushTimeout``) until nothing runs here, every
        controller and the keepalive still running: the VMs move as a flush moves them, and
        nobody fences a node that stops in order."""
        node = self.config.node
        limit = to_seconds(self.config.flush_timeout)
        deadline = time.monotonic() + limit
        # systemd's TimeoutStopSec may be shorter than flushTimeout: ask for the flush's time.
        self.notifier.extend_timeout(limit + 30.0, f"flushing node {node} before it stops")

        def flush(obj: Node) -> None:
            obj.spec.drain = True
            obj.metadata.annotations = {
                **obj.metadata.annotations,
                verbs.FLUSHED_ON_SHUTDOWN: utcnow(),
            }

        try:
            current = self.store.get(Node, node)
            if current.spec.drain and verbs.FLUSHED_ON_SHUTDOWN not in current.metadata.annotations:
                log.info("event=flush_on_shutdown node=%s state=already_drained", node)
            else:
                self.store.mutate_spec(Node, node, flush)
            log.info("event=flush_on_shutdown node=%s state=requested timeout=%.0fs", node, limit)
            while time.monotonic() < deadline:
                status = self.store.get(Node, node).status
                if status is not None and status.domain_state == DomainState.FLUSHED:
                    log.info("event=flush_on_shutdown node=%s state=flushed", node)
                    break
                time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
            else:
                log.warning(
                    "event=flush_on_shutdown node=%s state=timed_out after=%.0fs "
                    "action=stopping_anyway",
                    node,
                    limit,
                )
        except (StoreError, KazooException) as exc:
            log.warning("event=flush_on_shutdown node=%s state=failed error=%r", node, exc)
        # Migrations this node started: let them end (libvirt carries them on anyway).
        if not self.vms.departures.flights.wait_all(max(1.0, deadline - time.monotonic())):
            log.warning("event=flush_on_shutdown node=%s state=migrations_still_running", node)

    def _tell_systemd_ready(self) -> None:
        """READY=1 once the Node is registered, its lease held and every controller runs;
        warn when systemd's watchdog would fire between two heartbeats."""
        watchdog = self.notifier.watchdog_seconds
        if watchdog is not None and watchdog < 2 * self.agent.keepalive:
            log.warning(
                "event=watchdog_too_short node=%s watchdog=%.1fs keepalive=%.1fs "
                "action=raise_WatchdogSec_to_at_least_twice_keepaliveInterval",
                self.config.node,
                watchdog,
                self.agent.keepalive,
            )
        if self.notifier.ready(f"running node {self.config.node}"):
            log.info("event=sd_notify_ready node=%s watchdog=%s", self.config.node, watchdog)

    def _unflush_after_restart(self) -> None:
        """Unflush the node this daemon flushed as it stopped (``flushOnShutdown``)."""
        node = self.config.node

        def unflush(obj: Node) -> None:
            obj.spec.drain = False
            obj.metadata.annotations = {
                k: v for k, v in obj.metadata.annotations.items() if k != verbs.FLUSHED_ON_SHUTDOWN
            }

        try:
            current = self.store.get(Node, node)
            if verbs.FLUSHED_ON_SHUTDOWN not in current.metadata.annotations:
                return
            self.store.mutate_spec(Node, node, unflush)
        except (StoreError, KazooException) as exc:
            log.warning("event=unflush_after_restart node=%s state=failed error=%r", node, exc)
            return
        log.info("event=unflush_after_restart node=%s", node)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pvcnoded", description="PVC node daemon")
    parser.add_argument("--config", required=True, help="path to the daemon's YAML config")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"pvcnoded: {exc}", file=sys.stderr)
        return 2
    setup_logging(config.log_level, config.log_priority)
    # systemd's watchdog kills a hung daemon with SIGABRT: print every thread's stack first.
    faulthandler.enable()
    try:
        daemon = Daemon(config)
    except HypervisorError as exc:
        print(f"pvcnoded: cannot open hypervisor: {exc}", file=sys.stderr)
        return 1
    except HostNetworkError as exc:
        print(f"pvcnoded: cannot open the host network: {exc}", file=sys.stderr)
        return 1

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("event=signal signum=%d", signum)
        daemon.stopped.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        daemon.run()
    except Unavailable as exc:
        log.error("event=zookeeper_refused node=%s error=%s", config.node, exc)
        print(f"pvcnoded: {exc}", file=sys.stderr)
        return 1
    except LeaseHeld as exc:
        log.error("event=lease_held node=%s error=%s", config.node, exc)
        return 1
    except (SchemaTooNew, SchemaMigrationTimeout) as exc:
        # Logged where it was found (event=schema_too_new store=N code=M).
        print(f"pvcnoded: {exc}", file=sys.stderr)
        return 1
    except KazooTimeoutError:
        log.error("event=zookeeper_unreachable node=%s zookeeper=%s", config.node, config.zookeeper)
        print(f"pvcnoded: cannot reach ZooKeeper at {config.zookeeper}", file=sys.stderr)
        return 1
    except Exception as exc:
        log.exception("event=fatal node=%s error=%r", config.node, exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
