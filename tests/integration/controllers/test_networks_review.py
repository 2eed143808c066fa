"""Review of networks (issue 13): ways to break the gateways and the network agent that a
user would notice, each fixed now and kept so it stays fixed.

Three pvcnoded in network namespaces of their own, as in test_networks.py (its fixtures and
helpers, not copies).
"""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

from tests.ha_manifests import cluster_object
from tests.helpers import wait_for
from tests.integration.controllers import test_networks
from tests.integration.controllers.test_networks import (
    BRIDGE,
    NODES,
    SUBNET,
    Hosts,
    addresses,
    flood_peers,
    gateway_on,
    ip,
    lan,
    links,
    network_status,
    udhcpc,
)
from tests.integration.controllers.test_networks import pytestmark as pytestmark
from tests.integration.ha.test_ha_primary import settled_primary
from tests.localcluster_fixture import RunningCluster

# The fixtures of test_networks.py: three pvcnoded, each in a namespace of its own.
hosts = test_networks.hosts
cluster = test_networks.cluster


def mac_of(client: str) -> str:
    return str(json.loads(ip("-j", "-n", client, "link", "show", "nic0"))[0]["address"])


def leased(cluster: RunningCluster, mac: str) -> list[str]:
    return [
        lease["ip"] for lease in network_status(cluster).get("leases", []) if lease["mac"] == mac
    ]


def dnsmasq_files(cluster: RunningCluster, node: str) -> list[str]:
    """The files of the network 'lan' in ``node``'s dnsmasq run folder."""
    rundir = Path(cluster.cluster.dir) / node / "run" / "dnsmasq"
    return sorted(p.name for p in rundir.glob("lan.*"))


def lan_served(cluster: RunningCluster, hosts: Hosts) -> str:
    """Apply the cluster and 'lan'; the primary, once it serves lan's gateway alone."""
    cluster.apply(cluster_object())
    primary, _ = settled_primary(cluster)
    cluster.apply(lan())
    gateway_on(cluster, hosts, primary)
    return primary


def leased_client(cluster: RunningCluster, hosts: Hosts, node: str) -> tuple[str, str, str]:
    """A DHCP client on ``node`` with its lease in lan's status: (namespace, MAC, address)."""
    client = hosts.plug(node)
    got = udhcpc(client)
    assert got is not None
    mac = mac_of(client)
    wait_for(lambda: leased(cluster, mac) == [got], 20, "the lease in status")
    return client, mac, got


def condition(status: dict[str, Any], kind: str) -> str | None:
    return next((c["status"] for c in status.get("conditions", []) if c["type"] == kind), None)


def test_a_lease_stays_in_status_across_a_switchover(cluster: RunningCluster, hosts: Hosts) -> None:
    primary = lan_served(cluster, hosts)
    other = next(n for n in NODES if n != primary)
    _, mac, got = leased_client(cluster, hosts, other)

    target = next(n for n in NODES if n not in (primary, other))
    cluster.apply(cluster_object(primary=target))
    assert settled_primary(cluster)[0] == target
    gateway_on(cluster, hosts, target)
    # The client holds its lease for an hour and renews only after half of it: the status
    # (and the DHCP server now answering) should still know it without a renewal.
    wait_for(
        lambda: (
            network_status(cluster).get("gatewayNode") == target and leased(cluster, mac) == [got]
        ),
        20,
        "the client's lease in status after the switchover",
    )


def test_a_dead_node_is_not_listed_as_ready(cluster: RunningCluster, hosts: Hosts) -> None:
    cluster.apply(cluster_object())
    primary, _ = settled_primary(cluster)
    cluster.apply(lan())
    wait_for(
        lambda: network_status(cluster).get("readyNodes") == list(NODES), 30, "ready everywhere"
    )
    victim = next(n for n in NODES if n != primary)
    cluster.cluster.kill_node(victim, signal.SIGKILL)

    def daemon_state() -> str | None:
        node = cluster.api("GET", f"/api/v1/nodes/{victim}").json()
        return (node.get("status") or {}).get("daemonState")

    wait_for(lambda: daemon_state() in ("dead", "fenced"), 60, f"{victim} dead")
    # The live nodes already dropped it from their VXLAN flood lists: it carries nothing.
    survivors = [n for n in NODES if n != victim]
    wait_for(
        lambda: all(hosts.address(victim) not in flood_peers(hosts.nodes[n]) for n in survivors),
        20,
        f"{victim} out of the survivors' flood lists",
    )
    wait_for(
        lambda: network_status(cluster).get("readyNodes") == survivors,
        20,
        f"readyNodes without the dead {victim}",
    )


def test_a_deleted_network_leaves_nothing_for_a_new_one_of_its_name(
    cluster: RunningCluster, hosts: Hosts
) -> None:
    primary = lan_served(cluster, hosts)
    client, _, _ = leased_client(cluster, hosts, next(n for n in NODES if n != primary))
    ip("netns", "del", client)
    hosts.clients.remove(client)

    assert cluster.api("DELETE", "/api/v1/networks/lan").status_code == 200
    wait_for(
        lambda: all(BRIDGE not in links(ns) for ns in hosts.nodes.values()),
        30,
        "the bridge gone from every node",
    )
    left = dnsmasq_files(cluster, primary)

    other = "192.168.78"
    cluster.apply(
        lan(
            ipv4={
                "network": f"{other}.0/24",
                "gateway": f"{other}.1",
                "dhcp": {"start": f"{other}.100", "end": f"{other}.150"},
            },
            reservations=[],
        )
    )

    def served() -> dict[str, Any] | None:
        status = network_status(cluster)
        if (
            status.get("gatewayNode") == primary
            and condition(status, "GatewayReady") == "True"
            and f"{other}.1" in addresses(hosts.nodes[primary], BRIDGE)
        ):
            return status
        return None

    status = wait_for(served, 30, "the new lan served by the primary") or {}
    stale = [lease["ip"] for lease in status.get("leases", [])]
    assert (left, stale) == ([], []), "files left by the deleted network, leases it shows"


def test_a_restarted_primary_drops_a_gateway_changed_while_it_was_dead(
    cluster: RunningCluster, hosts: Hosts
) -> None:
    primary = lan_served(cluster, hosts)
    old, new = f"{SUBNET}.1", f"{SUBNET}.254"
    cluster.cluster.kill_node(primary, signal.SIGKILL)
    successor = str(
        wait_for(
            lambda: (p := network_status(cluster).get("gatewayNode")) not in (None, primary) and p,
            60,
            "the gateway on a new primary",
        )
    )
    moved = lan()
    moved["spec"]["ipv4"]["gateway"] = new
    cluster.apply(moved)
    wait_for(lambda: new in addresses(hosts.nodes[successor], BRIDGE), 30, "the new gateway")
    cluster.cluster.start_node(primary)

    def daemon_state() -> str | None:
        node = cluster.api("GET", f"/api/v1/nodes/{primary}").json()
        return (node.get("status") or {}).get("daemonState")

    wait_for(lambda: daemon_state() == "run", 60, f"{primary} running again")
    # Its stale DHCP server is stopped at start; its stale gateway address should go too.
    wait_for(
        lambda: old not in addresses(hosts.nodes[primary], BRIDGE),
        20,
        f"the old gateway {old} gone from the restarted {primary}",
    )
