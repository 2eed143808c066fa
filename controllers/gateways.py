"""The managed networks' gateways and DHCP servers, on the primary coordinator only.

While this node is primary (``take`` in the ordered takeover, after the floating
addresses), each managed network with ``ipv4`` gets its gateway address on its bridge
here, announced with gratuitous ARP, and one dnsmasq bound to that address alone (never
by interface: PVC learned that binding by interface made dnsmasq also listen on a wildcard
that clashed with its DNS server). ``release`` (relinquish, or a ZooKeeper outage that
may let another node take over) stops every dnsmasq and removes every gateway address
before the handover lock lets the next primary in. Networks changed or deleted meanwhile
are followed; a bridge not built yet is retried with back-off.

Network status (written here, primary only): the nodes where the network is ready, the
gateway's node, the DHCP leases (read from dnsmasq's lease file) and conditions.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import os
import signal
import threading
from datetime import UTC, datetime
from pathlib import Path

from controllers.config import NetworkConfig
from controllers.runtime import Controller
from hypervisor.dnsmasq import (
    DhcpHost,
    Dnsmasq,
    DnsmasqConfig,
    DnsmasqError,
    Lease,
    remove_files,
    stale_instances,
)
from hypervisor.hostnet import FloatingAddress, HostNetwork, HostNetworkError
from schemas import (
    GONE_STATES,
    DhcpLease,
    Network,
    NetworkStatus,
    Node,
    bridge_name,
    set_condition,
)
from zkstore import Informer, NotFound, ResourceInformer, Store, paths

log = logging.getLogger(__name__)

LEASE_POLL = 2.0
"""Seconds between reads of a held network's lease file into its status."""
RECORD = "gateways.json"
"""In the run folder: the gateway addresses this node holds (removed at its next start if it
crashed holding them, even those of networks changed or deleted meanwhile)."""


class _Held:
    def __init__(self, address: FloatingAddress, dhcp: Dnsmasq | None) -> None:
        self.address = address
        self.dhcp = dhcp


class NetworkGateways:
    def __init__(
        self, store: Store, node: str, config: NetworkConfig, hostnet: HostNetwork | None
    ) -> None:
        self.store = store
        self.node = node
        self.config = config
        self.hostnet = hostnet
        self.rundir = Path(config.run_dir) / "dnsmasq"
        self._active = False
        self._held: dict[str, _Held] = {}
        self._problems: dict[str, str] = {}
        self._lock = threading.RLock()
        self.networks = ResourceInformer(store, Network, self._on_network)
        self.nodes = ResourceInformer(store, Node, self._on_node)
        self.leases = Informer(store, paths.LEASES_NODES, self._on_node, children=())
        self.controller = Controller(
            f"gateways@{node}", self.reconcile, workers=1, list_keys=self.networks.keys
        )

    # -- life cycle --------------------------------------------------------------------

    def start(self) -> None:
        if not self.config.manage:
            return  # takes nothing, ever: no caches to keep
        self.networks.start()
        self.nodes.start()
        self.leases.start()
        self.controller.start()

    def close(self) -> None:
        self.release()
        self.controller.stop()
        self.leases.close()
        self.nodes.close()
        self.networks.close()
        if self.hostnet is not None:
            self.hostnet.close()

    def take(self) -> None:
        """Become the gateway of every managed network (in the background: a network whose
        bridge is not there yet must not fail the takeover)."""
        if not self.config.manage:
            return
        with self._lock:
            self._active = True
        for name in self.networks.keys():  # noqa: SIM118 (an informer, not a dict)
            self.controller.enqueue(name)

    def release(self) -> None:
        """Stop every dnsmasq and remove every gateway address; never raises."""
        with self._lock:
            self._active = False
            for name in sorted(self._held):
                self._drop(name)
            self._problems.clear()
        if not self.config.manage:
            return
        # Left by a crash of this daemon: a secondary runs no DHCP server and holds no gateway
        # (also one whose network changed or went while this daemon was down: the record).
        for pid in stale_instances(self.rundir):
            log.warning("event=dnsmasq_stale_stopped pid=%d", pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)  # listed just now by its conf file in our rundir
        stale = {g for net in self.networks.objects() if (g := _gateway(net)) is not None}
        stale |= self._recorded()
        for address in sorted(stale, key=str):
            if self.hostnet is None:
                break
            try:
                if self.hostnet.remove_address(address):
                    log.info("event=gateway_stale_removed address=%s", address)
            except HostNetworkError as exc:
                log.warning("event=gateway_release_failed address=%s error=%s", address, exc)
        with self._lock:
            self._record()

    def _recorded(self) -> set[FloatingAddress]:
        """The gateway addresses this node held, as its record in the run folder says."""
        try:
            entries = json.loads((self.rundir / RECORD).read_text())
            return {FloatingAddress(e["interface"], e["address"]) for e in entries}
        except FileNotFoundError:
            return set()
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("event=gateway_record_unreadable error=%s", exc)
            return set()

    def _record(self) -> None:
        """Write down the gateway addresses held now, before a crash can forget them."""
        entries = [
            {"interface": h.address.interface, "address": h.address.address}
            for h in self._held.values()
        ]
        try:
            self.rundir.mkdir(parents=True, exist_ok=True)
            partial = self.rundir / f".{RECORD}.new"
            partial.write_text(json.dumps(entries))
            partial.replace(self.rundir / RECORD)
        except OSError as exc:
            log.warning("event=gateway_record_failed error=%s", exc)

    # -- events ------------------------------------------------------------------------

    def _on_network(self, name: str) -> None:
        self.controller.enqueue(name)

    def _on_node(self, _name: str) -> None:
        if self._active:
            for name in self.networks.keys():  # noqa: SIM118 (an informer, not a dict)
                self.controller.enqueue(name)

    # -- reconcile -----------------------------------------------------------------------

    def reconcile(self, name: str) -> float | None:
        with self._lock:
            if not self._active:
                return None
            net = self.networks.get(name)
            want = _gateway(net) if net is not None else None
            held = self._held.get(name)
            if held is not None and (want is None or held.address != want):
                self._drop(name)
                held = None
            if net is None:
                # Deleted: nothing of it stays (a network made again under the name starts
                # with no leases of this one's).
                remove_files(self.rundir, name)
                self._problems.pop(name, None)
                return None
            if want is not None:
                try:
                    held = self._hold(net, want, held)
                except (HostNetworkError, DnsmasqError, ValueError) as exc:
                    self._problems[name] = str(exc)
                    self._write_status(net, self._held.get(name))
                    raise  # the runtime retries with back-off, and logs it
                self._problems.pop(name, None)
            # Under the lock: a release in between must not be followed by a status that
            # still names this node the gateway.
            self._write_status(net, held)
        return LEASE_POLL if held is not None and held.dhcp is not None else None

    def _hold(self, net: Network, want: FloatingAddress, held: _Held | None) -> _Held:
        assert self.hostnet is not None
        if held is None:
            held = _Held(want, None)
            self._held[net.name] = held
            self._record()  # before the address is added: a crash now still removes it
        if self.hostnet.add_address(want):
            log.info("event=gateway_taken network=%s address=%s", net.name, want)
            threading.Thread(
                target=self._announce, args=(want,), name=f"announce-{net.name}", daemon=True
            ).start()
        config = _dhcp_config(net, self.config.dns_port)
        if config is None:
            if held.dhcp is not None:
                held.dhcp.stop()
                held.dhcp = None
        elif held.dhcp is None:
            dhcp = Dnsmasq(config, self.rundir, self.config.namespace)
            if not dhcp.adopt():
                # The leases the last primary handed out, from the store: this server knows
                # them (they stay taken) and the status keeps showing them.
                dhcp.seed_leases(_seed(net))
                dhcp.start()
            dhcp.update(config)
            held.dhcp = dhcp
            log.info("event=dhcp_started network=%s pid=%s", net.name, dhcp.pid)
        elif held.dhcp.config != config:
            held.dhcp.update(config)
            log.info("event=dhcp_updated network=%s", net.name)
        return held

    def _announce(self, address: FloatingAddress) -> None:
        assert self.hostnet is not None
        try:
            self.hostnet.announce(address)
        except HostNetworkError as exc:
            log.warning("event=gateway_announce_failed address=%s error=%s", address, exc)

    def _drop(self, name: str) -> None:
        held = self._held.pop(name)
        if held.dhcp is not None:
            try:
                held.dhcp.stop()
                log.info("event=dhcp_stopped network=%s", name)
            except DnsmasqError as exc:
                log.error("event=dhcp_stop_failed network=%s error=%s", name, exc)
        if self.hostnet is not None:
            try:
                self.hostnet.remove_address(held.address)
                log.info("event=gateway_released network=%s address=%s", name, held.address)
            except HostNetworkError as exc:
                log.error("event=gateway_release_failed network=%s error=%s", name, exc)
        self._record()

    # -- status --------------------------------------------------------------------------

    def _write_status(self, net: Network, held: _Held | None) -> None:
        live = set(self.leases.keys())
        ready = sorted(
            n.name
            for n in self.nodes.objects()
            if n.name in live
            and n.status is not None
            and n.status.daemon_state not in GONE_STATES
            and any(e.name == net.name and e.ready for e in n.status.networks)
        )
        leases = []
        if held is not None and held.dhcp is not None:
            leases = [
                DhcpLease(
                    mac=lease.mac,
                    ip=lease.ip,
                    hostname=lease.hostname,
                    expires=(
                        datetime.fromtimestamp(lease.expires, UTC)
                        .isoformat()
                        .replace("+00:00", "Z")
                        if lease.expires
                        else None
                    ),
                )
                for lease in held.dhcp.leases()
            ]
        gateway = self.node if held is not None else None

        def update(previous: object) -> NetworkStatus | None:
            old = NetworkStatus.model_validate(previous) if previous else NetworkStatus()
            conditions = set_condition(
                old.conditions,
                "Ready",
                bool(ready),
                "Built" if ready else "NotBuilt",
                f"ready on {', '.join(ready)}" if ready else "ready on no node yet",
            )
            if _gateway(net) is not None:
                problem = self._problems.get(net.name)
                conditions = set_condition(
                    conditions,
                    "GatewayReady",
                    gateway is not None,
                    "Serving" if gateway else "NotServing",
                    f"gateway and DHCP on {gateway}" if gateway else (problem or "no primary yet"),
                )
            new = NetworkStatus(
                observed_generation=net.metadata.generation,
                conditions=conditions,
                ready_nodes=ready,
                gateway_node=gateway,
                leases=leases,
            )
            return None if previous and new.wire() == old.wire() else new

        try:
            self.store.update_status(Network, net.name, update)
        except NotFound:
            return


def _rfc3339(unix: int) -> str:
    return datetime.fromtimestamp(unix, UTC).isoformat().replace("+00:00", "Z")


def _gateway(net: Network | None) -> FloatingAddress | None:
    if net is None or net.spec.type != "managed" or net.spec.ipv4 is None:
        return None
    prefix = ipaddress.IPv4Network(net.spec.ipv4.network).prefixlen
    return FloatingAddress(bridge_name(net.spec), f"{net.spec.ipv4.gateway}/{prefix}")


def _dhcp_config(net: Network, dns_port: int) -> DnsmasqConfig | None:
    ipv4 = net.spec.ipv4
    if net.spec.type != "managed" or ipv4 is None:
        return None
    if ipv4.dhcp is None and not net.spec.reservations:
        return None
    return DnsmasqConfig(
        network=net.name,
        interface=bridge_name(net.spec),
        address=ipv4.gateway,
        prefixlen=ipaddress.IPv4Network(ipv4.network).prefixlen,
        range_start=ipv4.dhcp.start if ipv4.dhcp else None,
        range_end=ipv4.dhcp.end if ipv4.dhcp else None,
        hosts=tuple(DhcpHost(r.mac.lower(), r.ip, r.hostname) for r in net.spec.reservations),
        domain=net.spec.domain,
        dns_port=dns_port if net.spec.domain else 0,
    )


def _seed(net: Network) -> list[Lease]:
    """The leases in the network's status (the last primary's), for a new server's file."""
    subnet = ipaddress.IPv4Network(net.spec.ipv4.network) if net.spec.ipv4 else None
    seeded = []
    for lease in net.status.leases if net.status else []:
        if subnet is None or ipaddress.IPv4Address(lease.ip) not in subnet:
            continue
        expires = 0
        if lease.expires:
            expires = int(datetime.fromisoformat(lease.expires.replace("Z", "+00:00")).timestamp())
        seeded.append(Lease(lease.mac, lease.ip, lease.hostname, expires))
    return seeded
