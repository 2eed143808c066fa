"""The network agent (every node): each Network's bridge and uplink on this host.

- managed: bridge ``vmbr<vni>`` with port ``vxlan<vni>`` from this node's cluster address,
  flooding to every other live node's cluster address (head-end replication through FDB
  entries), kept current as nodes join, die and leave;
- bridged: bridge ``vmbr<vlan>`` with port ``vlan<vlan>`` on the configured bridge device
  (the VLAN sits on that device, never on another VLAN interface), or the device itself
  for an untagged network.

What it built, or why it could not, goes into Node.status.networks (the node agent's next
heartbeat); the scheduler places a VM only on nodes where all its networks are ready. A
network deleted, or changed to another bridge, loses its old bridge here; bridges PVC made
for networks that no longer exist are removed at start (found by their ``pvc:`` alias).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from controllers.config import NetworkConfig
from controllers.runtime import Controller
from hypervisor.hostnet import BridgeSpec, HostBridges, HostNetworkError
from schemas import GONE_STATES, Network, Node, NodeNetwork, bridge_name
from zkstore import Informer, ResourceInformer, Store, paths

log = logging.getLogger(__name__)


class NetworkAgent:
    def __init__(
        self,
        store: Store,
        node: str,
        config: NetworkConfig,
        bridges: HostBridges | None,
        on_change: Callable[[], None],
    ) -> None:
        self.store = store
        self.node = node
        self.config = config
        self.bridges = bridges
        self._on_change = on_change
        self._lock = threading.Lock()
        self._state: dict[str, NodeNetwork] = {}
        self._built: dict[str, str] = {}  # network -> the bridge built for it here
        self._peers: frozenset[str] = frozenset()
        self.networks = ResourceInformer(store, Network, self._on_network)
        self.nodes = ResourceInformer(store, Node, self._on_node)
        self.leases = Informer(store, paths.LEASES_NODES, self._on_node, children=())
        self.controller = Controller(
            f"networks@{node}", self.reconcile, workers=1, list_keys=self.networks.keys
        )

    # -- life cycle --------------------------------------------------------------------

    def start(self) -> None:
        # Peers matter only to the VXLAN ports this host builds.
        informers = (self.leases, self.nodes, self.networks) if self.config.manage else ()
        for informer in informers or (self.networks,):
            informer.start()
        self._peers = self._live_peers()
        self._remove_orphans()
        self.controller.start()
        for name in self.networks.keys():  # noqa: SIM118 (an informer, not a dict)
            self.controller.enqueue(name)

    def stop(self) -> None:
        self.controller.stop()
        for informer in (self.networks, self.nodes, self.leases):
            informer.close()
        if self.bridges is not None:
            self.bridges.close()

    def latest(self) -> list[NodeNetwork]:
        """For the heartbeat: every network as this node has it, by name."""
        with self._lock:
            return [self._state[n] for n in sorted(self._state)]

    # -- events ------------------------------------------------------------------------

    def _on_network(self, name: str) -> None:
        self.controller.enqueue(name)

    def _on_node(self, _name: str) -> None:
        with self._lock:  # two informers' threads call this
            peers = self._live_peers()
            if peers == self._peers:
                return
            self._peers = peers
        log.info("event=network_peers_changed node=%s peers=%s", self.node, ",".join(sorted(peers)))
        for net in self.networks.objects():
            if net.spec.type == "managed":
                self.controller.enqueue(net.name)

    def _live_peers(self) -> frozenset[str]:
        """The cluster addresses of the other nodes that hold their lease (live)."""
        live = set(self.leases.keys())
        own = self.config.cluster.address if self.config.cluster else None
        peers = set()
        for node in self.nodes.objects():
            status = node.status
            if (
                node.name == self.node
                or node.name not in live
                or status is None
                or status.cluster_address is None
                or status.daemon_state in GONE_STATES
            ):
                continue
            if status.cluster_address != own:
                peers.add(status.cluster_address)
        return frozenset(peers)

    # -- reconcile -----------------------------------------------------------------------

    def reconcile(self, name: str) -> float | None:
        net = self.networks.get(name)
        if net is None:
            self._tear_down(name)
            return None
        bridge = bridge_name(net.spec)
        old = self._built.get(name)
        if old is not None and old != bridge:
            self._tear_down(name)  # its vni or vlan changed: the old bridge goes first
        if not self.config.manage:
            self._set(name, bridge, True, "not built here: network.manage is false")
            return None
        spec, problem = self._spec(net)
        if spec is None or self.bridges is None:
            self._set(name, bridge, False, problem or "no host network backend")
            return None
        try:
            changed = self.bridges.ensure(spec)
            if spec.kind == "vxlan":
                changed = self.bridges.set_peers(spec, self._peers) or changed
        except HostNetworkError as exc:
            self._set(name, bridge, False, str(exc))
            raise  # the runtime retries with back-off and logs it
        self._built[name] = bridge
        if changed:
            log.info(
                "event=network_built node=%s network=%s bridge=%s peers=%d",
                self.node,
                name,
                bridge,
                len(self._peers) if spec.kind == "vxlan" else 0,
            )
        self._set(name, bridge, True, "")
        return None

    def _spec(self, net: Network) -> tuple[BridgeSpec | None, str | None]:
        bridge = bridge_name(net.spec)
        if net.spec.type == "managed":
            cluster = self.config.cluster
            if cluster is None:
                return None, "no cluster address: set network.cluster in pvcnoded's config"
            return (
                BridgeSpec(
                    network=net.name,
                    bridge=bridge,
                    kind="vxlan",
                    mtu=net.spec.mtu,
                    vni=net.spec.vni,
                    local=cluster.address,
                    device=cluster.device,
                ),
                None,
            )
        device = self.config.bridge_device
        if device is None:
            return None, "no bridge device: set network.bridgeDevice in pvcnoded's config"
        if net.spec.vlan is None:
            spec = BridgeSpec(
                network=net.name, bridge=bridge, kind="none", mtu=net.spec.mtu, device=device
            )
            return spec, None
        spec = BridgeSpec(
            network=net.name,
            bridge=bridge,
            kind="vlan",
            mtu=net.spec.mtu,
            vlan=net.spec.vlan,
            device=device,
        )
        return spec, None

    def _tear_down(self, name: str) -> None:
        bridge = self._built.pop(name, None)
        with self._lock:
            self._state.pop(name, None)
        if bridge is not None and self.bridges is not None:
            try:
                if self.bridges.remove(bridge):
                    log.info(
                        "event=network_removed node=%s network=%s bridge=%s",
                        self.node,
                        name,
                        bridge,
                    )
            except HostNetworkError:
                self._built[name] = bridge  # tried again at the next resync
                raise
        self._on_change()

    def _remove_orphans(self) -> None:
        """Bridges PVC made here for networks that no longer exist (deleted while this daemon
        was down) go; those of existing networks are adopted."""
        if self.bridges is None or not self.config.manage:
            return
        try:
            built = self.bridges.list()
        except HostNetworkError as exc:
            log.warning("event=network_list_failed node=%s error=%s", self.node, exc)
            return
        for bridge, state in built.items():
            net = self.networks.get(state.network)
            if net is not None and bridge_name(net.spec) == bridge:
                self._built[state.network] = bridge
                continue
            try:
                self.bridges.remove(bridge)
                log.info(
                    "event=network_orphan_removed node=%s network=%s bridge=%s",
                    self.node,
                    state.network,
                    bridge,
                )
            except HostNetworkError as exc:
                log.warning("event=network_orphan_remove_failed bridge=%s error=%s", bridge, exc)

    def _set(self, name: str, bridge: str, ready: bool, message: str) -> None:
        entry = NodeNetwork(name=name, bridge=bridge, ready=ready, message=message)
        with self._lock:
            if self._state.get(name) == entry:
                return
            self._state[name] = entry
        if not ready:
            log.warning(
                "event=network_not_ready node=%s network=%s why=%r", self.node, name, message
            )
        self._on_change()
