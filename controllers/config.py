"""pvcnoded's configuration file (YAML), with environment overrides for the ZooKeeper address."""

from __future__ import annotations

import ipaddress
import os
import socket
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import Field, ValidationError, model_validator

from hypervisor.hostnet import FloatingAddress
from schemas.configfile import ConfigFileError, read_yaml_mapping
from schemas.daemon_logging import LogLevel, LogPriority
from schemas.meta import DnsLabel, Model
from schemas.node import FenceConfig
from schemas.quantity import Duration, Size, to_seconds
from zkstore.connection import ZookeeperAuth, ZookeeperTls


class TestHost(Model):
    """Create a libvirt test-driver host file of this size (simulated hypervisor)."""

    memory: Size = "16Gi"
    cpus: int = Field(default=8, ge=1)


class LibvirtConfig(Model):
    uri: str = "qemu:///system"
    test_host: TestHost | None = None
    disk_dir: str = "/var/lib/pvc/disks"
    shared_disk_dir: bool = False
    """True when ``diskDir`` is one folder that every node declaring the same path shared
    reaches (NFS, a cluster filesystem, or one machine's folder for the local cluster):
    a VM's disks created there may then run on any of them. False: the folder is this
    node's own, and a disk created in it binds its VM to this node."""
    migration_uri: str | None = None
    """The libvirt URI other nodes' libvirtd reach this node's libvirtd on for live
    migration (peer to peer: the source's libvirtd connects to it). Default: ``uri`` when
    it names a host or a socket, else ``qemu+tcp://<this host's name>/system`` (libvirtd
    must then listen on TCP); none on the test driver, which cannot live-migrate."""
    migration_address: str | None = None
    """Where live-migration data to this node goes, e.g. ``tcp://10.0.0.2`` on the cluster
    network (so it stays between the two nodes); default: the hypervisor's choice (the
    host's name)."""

    def peer_uri(self, hypervisor_uri: str) -> str | None:
        """The URI published for live migration to this node (``migrationUri``)."""
        if self.migration_uri:
            return self.migration_uri
        if hypervisor_uri.startswith("test"):
            return None
        parts = urlsplit(hypervisor_uri)
        if parts.hostname or "socket=" in parts.query:
            return hypervisor_uri
        return f"qemu+tcp://{socket.gethostname()}{parts.path or '/system'}"


class StorageConfig(Model):
    """How this node looks at the cluster's StoragePools."""

    probe_interval: Duration = "15s"
    """Between looks at every pool (reachable, space) for Node.status.storage; a pool
    added or changed is looked at at once."""


class CrashLoopConfig(Model):
    """Restart back-off of VMs that keep stopping unexpectedly (KubeVirt's CrashLoopBackOff).

    The first unexpected stop restarts at once; the n-th in a row waits
    base x (n-1)^2, capped; running for ``resetAfter`` clears the count.
    """

    base: Duration = "10s"
    cap: Duration = "300s"
    reset_after: Duration = "60s"


class FloatingAddressConfig(Model):
    """An address that follows the primary coordinator (e.g. the API's address)."""

    address: str
    """CIDR, e.g. 10.0.0.254/24."""
    interface: str

    @model_validator(mode="after")
    def _valid(self) -> FloatingAddressConfig:
        self.floating()  # raises ValueError with what is wrong
        return self

    def floating(self) -> FloatingAddress:
        return FloatingAddress(interface=self.interface, address=self.address)


class ClusterInterfaceConfig(Model):
    """This host's address on the cluster network: managed networks' VXLAN tunnels run
    between these addresses (head-end replication to every other node's)."""

    address: str
    """The node's own cluster address (IPv4, no prefix), e.g. 10.0.0.11; it must already be
    configured on the host (PVC does not move the host's own addresses)."""
    device: str | None = None
    """The device that address is on (the VXLAN's underlay, which also gives the default
    MTU of managed networks: its MTU - 50); None: the kernel's route decides."""

    @model_validator(mode="after")
    def _valid(self) -> ClusterInterfaceConfig:
        ipaddress.IPv4Address(self.address)  # ValueError naming it
        return self


class NetworkConfig(Model):
    namespace: str | None = None
    """The network namespace that stands for this host's network (several simulated
    nodes on one machine); None: the daemon's own namespace."""
    floating_addresses: list[FloatingAddressConfig] = Field(default_factory=list)
    """Held by whichever coordinator is primary; give every coordinator the same list."""
    manage: bool = True
    """Build the bridges, VLAN and VXLAN ports of every Network on this host (and, on the
    primary, the managed networks' gateways and DHCP servers). False: this host builds none
    and reports every network ready (a simulated node on the libvirt test driver, which
    attaches no NICs); documented for that use only."""
    cluster: ClusterInterfaceConfig | None = None
    """Needed for managed (VXLAN) networks; without it they are not ready on this node."""
    bridge_device: str | None = None
    """The device bridged networks' VLANs sit on (a NIC or bond, not a VLAN interface);
    needed for bridged networks with a vlan, and for an untagged one."""
    run_dir: str = "/run/pvc"
    """Where the primary keeps its DHCP servers' configs, leases and logs."""
    dns_port: int = Field(default=0, ge=0, le=65535)
    """The port the managed networks' dnsmasq serves DNS for their ``domain`` on, on the
    gateway address only; 0: DHCP only (no DNS)."""


class MetricsConfig(Model):
    """pvcnoded's Prometheus endpoint (http://listen:port/metrics)."""

    listen: str = "127.0.0.1"
    """Loopback by default: nothing leaves the host until an admin opens it (e.g. the
    host's cluster-network address, for a Prometheus on another host)."""
    port: int = Field(default=9370, ge=0, le=65535)
    """0: no endpoint."""

    @model_validator(mode="after")
    def _valid(self) -> MetricsConfig:
        try:
            ipaddress.ip_address(self.listen)
        except ValueError:
            raise ValueError(
                f"listen must be an IP address (0.0.0.0 or :: for all), not {self.listen!r}"
            ) from None
        return self


class DaemonConfig(Model):
    node: DnsLabel = Field(default_factory=lambda: socket.gethostname().split(".")[0].lower())
    zookeeper: str = "127.0.0.1:2181"
    root: str = "/pvc"
    coordinator: bool = False
    libvirt: LibvirtConfig = Field(default_factory=LibvirtConfig)
    workers: int = Field(default=4, ge=1, le=64)
    resync_period: Duration = "30s"
    session_timeout: Duration = "10s"
    log_level: LogLevel = "info"
    """debug, info, warning, error or critical (schemas.daemon_logging.LOG_LEVELS)."""
    log_priority: LogPriority = "auto"
    """auto: prefix each log line with its syslog priority (<N>) when stderr is the journal;
    always; never."""
    state_dir: str = "/var/lib/pvc"
    crash_loop: CrashLoopConfig = Field(default_factory=CrashLoopConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    network: NetworkConfig = Field(default_factory=NetworkConfig)
    fence: FenceConfig | None = None
    """The Node's fence agent, used when this daemon first registers the Node."""
    flush_on_shutdown: bool = False
    """On an orderly stop (SIGTERM, systemd stop), flush this node first (its VMs move as
    their spec.migration.method says), keeping its keepalive until its last step; at the
    next start the daemon unflushes the node it flushed."""
    flush_timeout: Duration = "300s"
    """How long an orderly stop waits for that flush before stopping anyway."""
    schema_migration_timeout: Duration = "45s"
    """How long the daemon waits at start for another daemon's schema migration (the lock
    /locks/schema-migration) before exiting 1 (docs/backup.md)."""
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    zookeeper_auth: ZookeeperAuth | None = None
    """The ZooKeeper identity this daemon connects with (``coordinator`` on coordinator
    hosts, ``node`` elsewhere); None: anonymous, for a store made before ACLs."""
    zookeeper_tls: ZookeeperTls | None = None
    """Connect to ZooKeeper's secure client port with TLS."""

    @property
    def resync_seconds(self) -> float:
        return to_seconds(self.resync_period)

    @property
    def session_seconds(self) -> float:
        return to_seconds(self.session_timeout)


class ConfigError(ValueError):
    pass


def load_config(path: str | Path) -> DaemonConfig:
    try:
        raw = read_yaml_mapping(path)
    except ConfigFileError as exc:
        raise ConfigError(str(exc)) from None
    if env_zk := os.environ.get("PVC_ZOOKEEPER"):
        raw["zookeeper"] = env_zk
    try:
        config = DaemonConfig.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        field = ".".join(str(p) for p in err["loc"])
        raise ConfigError(f"{path}: {field}: {err['msg']}") from None
    if config.zookeeper_auth is not None:
        try:
            config.zookeeper_auth.identity()
        except ValueError as exc:
            raise ConfigError(f"{path}: {exc}") from None
        if config.coordinator and config.zookeeper_auth.user == "node":
            raise ConfigError(
                f"{path}: zookeeperAuth.user: a coordinator connects as 'coordinator' (as "
                "primary it fences, and only that identity reads fence credentials)"
            )
    return config
