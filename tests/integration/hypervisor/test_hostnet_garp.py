"""Gratuitous ARP by each method, in network namespaces this module creates: the installed
arping (whichever flavour it is) and the raw socket. A neighbour's stale entry moves to
the announcing node, and a raw listener on the neighbour's side sees the frames: broadcast
ARP requests whose sender and target address are the announced one, from the node's MAC.

One LAN for the module (namespaces pvct-<hex>, deleted at teardown): an observer holding
a bridge, two nodes plugged into it. Skips, saying why, without root or `ip netns`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import struct
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from hypervisor.hostnet import FloatingAddress, HostNetworkError, NetlinkHostNetwork, garp
from hypervisor.hostnet.garp import Method
from tests.helpers import wait_for
from tests.integration.hypervisor.test_hostnet_netlink import (
    IP_COMMAND_TIMEOUT,
    NEIGHBOUR_UPDATE_TIMEOUT,
    STALE_MAC,
    ip,
    mac_of,
    neighbour_mac,
)

INTERVAL = 0.1
STALE = ("nud", "stale", "dev", "br0")
COUNT = 2


@dataclass(frozen=True)
class Lan:
    observer: str
    nodes: tuple[str, str]


@pytest.fixture(scope="module")
def lan() -> Iterator[Lan]:
    if os.geteuid() != 0:
        pytest.skip("creating network namespaces and raw sockets needs root")
    if shutil.which("ip") is None:
        pytest.skip("iproute2's `ip` is not installed")
    names = [f"pvct-{uuid.uuid4().hex[:10]}" for _ in range(3)]
    try:
        for name in names:
            ip("netns", "add", name)
            ip("-n", name, "link", "set", "lo", "up")
        observer, *nodes = names
        ip("-n", observer, "link", "add", "br0", "type", "bridge")
        ip("-n", observer, "link", "set", "br0", "up")
        ip("-n", observer, "addr", "add", "10.201.0.1/24", "dev", "br0")
        for n, node in enumerate(nodes):
            port = f"port{n}"
            ip("-n", observer, "link", "add", port, "type", "veth", "peer", "name", "eth0")
            ip("-n", observer, "link", "set", "eth0", "netns", node)
            ip("-n", observer, "link", "set", port, "master", "br0", "up")
            ip("-n", node, "link", "set", "eth0", "up")
        yield Lan(observer, (nodes[0], nodes[1]))
    finally:
        for name in names:
            subprocess.run(
                ["ip", "netns", "del", name], capture_output=True, timeout=IP_COMMAND_TIMEOUT
            )


class Listener:
    """A raw ARP socket on the observer's bridge: every ARP frame that crosses it."""

    def __init__(self, netns: str) -> None:
        def open_socket() -> socket.socket:
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0806))
            sock.bind(("br0", 0x0806))
            sock.settimeout(0.05)
            return sock

        self.sock = garp.in_namespace(netns, open_socket, 5.0)
        self.frames: list[bytes] = []

    def gratuitous(self, ip_address: str, mac: str) -> int:
        """How many gratuitous ARP requests for ``ip_address`` from ``mac`` came so far."""
        with contextlib.suppress(TimeoutError, BlockingIOError):
            while True:
                self.frames.append(self.sock.recv(2048))
        packed, sender = socket.inet_aton(ip_address), bytes.fromhex(mac.replace(":", ""))
        return sum(
            1
            for f in self.frames
            if f[:6] == b"\xff" * 6
            and struct.unpack("!H", f[20:22])[0] == 1  # a request
            and f[22:28] == sender
            and f[28:32] == packed  # sender address
            and f[38:42] == packed  # target address: the same, so gratuitous
        )

    def close(self) -> None:
        self.sock.close()


def installed_arping() -> Method:
    found = garp.detect_arping()
    if found is None:
        pytest.skip("no arping of a known flavour is installed (Debian package `arping`)")
    return found[1]


@pytest.mark.parametrize("method", ["arping", Method.RAW])
def test_each_method_moves_the_neighbours_entry(lan: Lan, method: str) -> None:
    chosen = installed_arping() if method == "arping" else Method(method)
    address = "10.201.0.254"
    fa = FloatingAddress("eth0", f"{address}/24")
    listener = Listener(lan.observer)
    try:
        for node in lan.nodes:  # A takes the address, then B takes it over
            # A stale entry, as a neighbour that talked to an earlier owner has: Linux
            # repoints an existing entry on a gratuitous ARP and creates none.
            ip("-n", lan.observer, "neigh", "replace", address, "lladdr", STALE_MAC, *STALE)
            mac = mac_of(node, "eth0")
            with NetlinkHostNetwork(
                node, announce_interval=INTERVAL, announce_count=COUNT, announce_method=chosen
            ) as network:
                network.add_address(fa)
                network.announce(fa)
                network.remove_address(fa)
            wait_for(
                lambda mac=mac: neighbour_mac(lan.observer, "br0", address) == mac,
                NEIGHBOUR_UPDATE_TIMEOUT,
                f"the observer's entry for {address} to move to {node} ({mac}) by {chosen}",
            )
            wait_for(
                lambda mac=mac: listener.gratuitous(address, mac) >= COUNT,
                NEIGHBOUR_UPDATE_TIMEOUT,
                f"{COUNT} gratuitous ARP requests from {mac} ({chosen})",
            )
    finally:
        listener.close()


def test_auto_sends_them_by_raw_socket_without_a_known_arping(
    lan: Lan, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(garp, "detect_arping", lambda: None)  # as on a host without arping
    node = lan.nodes[0]
    mac = mac_of(node, "eth0")
    listener = Listener(lan.observer)
    try:
        used = garp.announce(
            "eth0", "10.201.0.253", count=1, interval=INTERVAL, timeout=2.0, netns=node
        )
        assert used == Method.RAW
        wait_for(lambda: listener.gratuitous("10.201.0.253", mac) == 1, 5.0, "the frame")
    finally:
        listener.close()


@pytest.mark.parametrize("method", [Method.AUTO, Method.RAW])
def test_a_missing_interface_is_named(lan: Lan, method: Method) -> None:
    with (
        NetlinkHostNetwork(lan.nodes[0], announce_method=method) as network,
        pytest.raises(HostNetworkError) as raised,
    ):
        network.announce(FloatingAddress("pvcnosuch0", "10.201.0.254/24"))
    assert "pvcnosuch0" in str(raised.value) and lan.nodes[0] in str(raised.value)
