"""Networks across nodes: each pvcnoded with a network namespace of its own as its host
(its own cluster address on a shared switch, ZooKeeper on loopback for all). A managed
network spans them over VXLAN; a DHCP client plugged into the bridge on one node gets its
lease from dnsmasq on the primary on another; the gateway follows the primary.

Real netlink, real dnsmasq, busybox udhcpc (``-s /bin/true``: never a script that would
rewrite the host's resolv.conf), in namespaces this module makes and deletes.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.ha_manifests import cluster_object
from tests.helpers import wait_for
from tests.integration.ha.test_ha_primary import settled_primary
from tests.localcluster_fixture import RunningCluster, start_cluster

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root"),
    pytest.mark.skipif(shutil.which("dnsmasq") is None, reason="dnsmasq is not installed"),
    pytest.mark.skipif(shutil.which("busybox") is None, reason="busybox (udhcpc) is not installed"),
]

NODES = ("node1", "node2", "node3")
VNI = 4242
BRIDGE = f"vmbr{VNI}"
SUBNET = "192.168.77"
RESERVED_MAC = "52:54:00:00:00:99"


def ip(*args: str, check: bool = True) -> str:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)
    if check and result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout


def links(ns: str) -> set[str]:
    return {link["ifname"] for link in json.loads(ip("-j", "-n", ns, "link", "show") or "[]")}


def addresses(ns: str, dev: str) -> set[str]:
    found = json.loads(ip("-j", "-n", ns, "addr", "show", "dev", dev, check=False) or "[]")
    return {a["local"] for link in found for a in link.get("addr_info", [])}


def flood_peers(ns: str) -> set[str]:
    out = subprocess.run(
        ["bridge", "-n", ns, "-j", "fdb", "show", "dev", f"vxlan{VNI}"],
        capture_output=True,
        text=True,
        timeout=10,
    ).stdout
    return {e["dst"] for e in json.loads(out or "[]") if e.get("mac") == "00:00:00:00:00:00"}


class Hosts:
    """node -> its namespace, and the DHCP clients plugged into the nodes' bridges."""

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.switch = f"pvcn-{tag}-sw"
        self.nodes: dict[str, str] = {}
        self.clients: list[str] = []

    def address(self, node: str) -> str:
        return f"10.231.0.{NODES.index(node) + 1}"

    def make(self) -> None:
        ip("netns", "add", self.switch)
        ip("-n", self.switch, "link", "add", "sw", "type", "bridge")
        ip("-n", self.switch, "link", "set", "sw", "up")
        for i, node in enumerate(NODES, start=1):
            ns = f"pvcn-{self.tag}-{i}"
            ip("netns", "add", ns)
            self.nodes[node] = ns
            ip("-n", ns, "link", "set", "lo", "up")
            ip("-n", ns, "link", "add", "eth0", "type", "veth", "peer", "p0", "netns", self.switch)
            ip("-n", self.switch, "link", "set", "p0", "name", f"p{i}")
            ip("-n", self.switch, "link", "set", f"p{i}", "master", "sw", "up")
            ip("-n", ns, "addr", "add", f"{self.address(node)}/24", "dev", "eth0")
            ip("-n", ns, "link", "set", "eth0", "up")

    def plug(self, node: str, mac: str | None = None) -> str:
        """A client namespace with a NIC in the node's network bridge (as a VM's tap)."""
        name = f"pvcn-{self.tag}-c{len(self.clients)}"
        ip("netns", "add", name)
        self.clients.append(name)
        port = f"t{self.tag[:4]}{len(self.clients)}"
        ip(
            "-n",
            name,
            "link",
            "add",
            "nic0",
            "type",
            "veth",
            "peer",
            port,
            "netns",
            self.nodes[node],
        )
        if mac:
            ip("-n", name, "link", "set", "nic0", "address", mac)
        ip("-n", name, "link", "set", "nic0", "up")
        ip("-n", self.nodes[node], "link", "set", port, "master", BRIDGE, "up")
        return name

    def delete(self) -> None:
        for ns in [*self.clients, *self.nodes.values(), self.switch]:
            with contextlib.suppress(RuntimeError):
                ip("netns", "del", ns)


def udhcpc(client: str) -> str | None:
    """One DHCP exchange in ``client`` (busybox, no script): the address it was offered and
    acknowledged, or None."""
    result = subprocess.run(
        [
            *("ip", "netns", "exec", client, "busybox", "udhcpc", "-i", "nic0", "-n", "-q"),
            *("-t", "6", "-T", "1", "-s", "/bin/true"),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    for line in (result.stdout + result.stderr).splitlines():
        if "lease of" in line and "obtained" in line:
            return line.split("lease of", 1)[1].split()[0]
    return None


def ping(client: str, address: str, own: str) -> bool:
    """The client, with ``own`` on its NIC, reaches ``address`` (one ping, 1 s)."""
    ip("-n", client, "addr", "replace", f"{own}/24", "dev", "nic0")
    result = subprocess.run(
        ["ip", "netns", "exec", client, "ping", "-c", "1", "-W", "1", address],
        capture_output=True,
        timeout=10,
    )
    return result.returncode == 0


@pytest.fixture
def hosts() -> Iterator[Hosts]:
    made = Hosts(uuid.uuid4().hex[:6])
    try:
        made.make()
        yield made
    finally:
        made.delete()


@pytest.fixture
def cluster(tmp_path: Path, hosts: Hosts) -> Iterator[RunningCluster]:
    networks: dict[str, dict[str, object]] = {
        node: {
            "namespace": ns,
            "manage": True,
            "cluster": {"address": hosts.address(node), "device": "eth0"},
        }
        for node, ns in hosts.nodes.items()
    }
    yield from start_cluster(
        tmp_path / "networks", nodes=3, session_timeout="4s", node_networks=networks
    )


def lan(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "pvc/v1",
        "kind": "Network",
        "metadata": {"name": "lan"},
        "spec": {
            "type": "managed",
            "vni": VNI,
            "ipv4": {
                "network": f"{SUBNET}.0/24",
                "gateway": f"{SUBNET}.1",
                "dhcp": {"start": f"{SUBNET}.100", "end": f"{SUBNET}.150"},
            },
            "reservations": [{"mac": RESERVED_MAC, "ip": f"{SUBNET}.10", "hostname": "db"}],
            **spec,
        },
    }


def network_status(cluster: RunningCluster) -> dict[str, Any]:
    return cluster.api("GET", "/api/v1/networks/lan").json().get("status") or {}


def gateway_on(cluster: RunningCluster, hosts: Hosts, node: str) -> None:
    """Wait until the gateway address is on ``node``'s bridge alone and status says so."""
    gateway = f"{SUBNET}.1"
    wait_for(
        lambda: [n for n, ns in hosts.nodes.items() if gateway in addresses(ns, BRIDGE)] == [node],
        30,
        f"the gateway on {node} alone",
    )
    wait_for(lambda: network_status(cluster).get("gatewayNode") == node, 20, "gatewayNode")


def test_a_managed_network_spans_the_nodes_and_serves_dhcp_from_the_primary(
    cluster: RunningCluster, hosts: Hosts
) -> None:
    before = {node: links(ns) for node, ns in hosts.nodes.items()}
    cluster.apply(cluster_object())
    primary, _ = settled_primary(cluster)
    cluster.apply(lan())
    st = wait_for(
        lambda: (s := network_status(cluster)).get("readyNodes") == list(NODES) and s,
        30,
        "lan ready on every node",
    )
    assert {c["type"]: c["status"] for c in st["conditions"]}["Ready"] == "True"
    gateway_on(cluster, hosts, primary)
    for node, ns in hosts.nodes.items():
        assert {BRIDGE, f"vxlan{VNI}"} <= links(ns)
        others = {hosts.address(n) for n in NODES if n != node}
        assert flood_peers(ns) == others, node

    # A client on another node than the primary: its DHCP crosses the VXLAN.
    other = next(n for n in NODES if n != primary)
    client = hosts.plug(other)
    got = udhcpc(client)
    assert got is not None and got.startswith(f"{SUBNET}.1"), got
    assert 100 <= int(got.rsplit(".", 1)[1]) <= 150
    mac = json.loads(ip("-j", "-n", client, "link", "show", "nic0"))[0]["address"]
    wait_for(
        lambda: any(
            lease["mac"] == mac and lease["ip"] == got
            for lease in network_status(cluster).get("leases", [])
        ),
        20,
        "the lease in the Network's status",
    )
    # A reserved MAC gets its reserved address.
    reserved = hosts.plug(other, mac=RESERVED_MAC)
    assert udhcpc(reserved) == f"{SUBNET}.10"

    # Graceful switchover: the gateway and DHCP move; the client renews from the new one.
    target = next(n for n in NODES if n not in (primary, other))
    cluster.apply(cluster_object(primary=target))
    assert settled_primary(cluster)[0] == target
    gateway_on(cluster, hosts, target)
    assert udhcpc(client) == got
    assert ping(client, f"{SUBNET}.1", got)

    for name in hosts.clients:
        ip("netns", "del", name)
    hosts.clients.clear()
    # A new vni: every node moves the network to the new bridge and removes the old one;
    # the gateway follows it.
    cluster.apply(lan(vni=VNI + 1))
    wait_for(
        lambda: all(
            f"vmbr{VNI + 1}" in (have := links(ns)) and BRIDGE not in have
            for ns in hosts.nodes.values()
        ),
        30,
        f"vmbr{VNI + 1} in place of {BRIDGE} on every node",
    )
    wait_for(
        lambda: f"{SUBNET}.1" in addresses(hosts.nodes[target], f"vmbr{VNI + 1}"),
        20,
        "the gateway on the new bridge",
    )
    # Deleting the network removes its links from every node: nothing left behind.
    assert cluster.api("DELETE", "/api/v1/networks/lan").status_code == 200
    wait_for(
        lambda: all(links(ns) == before[node] for node, ns in hosts.nodes.items()),
        30,
        "every node's links as before the network",
    )


def test_after_a_primary_crash_the_gateway_answers_from_the_new_primary(
    cluster: RunningCluster, hosts: Hosts
) -> None:
    cluster.apply(cluster_object())
    cluster.apply(lan())
    primary, _ = settled_primary(cluster)
    gateway_on(cluster, hosts, primary)
    other = next(n for n in NODES if n != primary)
    client = hosts.plug(other)
    got = udhcpc(client)
    assert got is not None
    cluster.cluster.signal(primary, signal.SIGKILL)
    new = wait_for(
        lambda: (p := network_status(cluster).get("gatewayNode")) not in (None, primary) and p,
        60,
        "the gateway on a new primary",
    )
    wait_for(lambda: f"{SUBNET}.1" in addresses(hosts.nodes[new], BRIDGE), 20, "the address")
    assert wait_for(lambda: udhcpc(client), 30, "a DHCP answer from the new primary") == got
    # The lease is in the new primary's own lease file (its status says so): it answered.
    mac = json.loads(ip("-j", "-n", client, "link", "show", "nic0"))[0]["address"]
    wait_for(
        lambda: (
            (s := network_status(cluster)).get("gatewayNode") == new
            and any(lease["mac"] == mac for lease in s.get("leases", []))
        ),
        20,
        "the renewed lease in the new primary's status",
    )
    assert wait_for(lambda: ping(client, f"{SUBNET}.1", got), 20, "the gateway to answer")
