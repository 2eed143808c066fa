"""NetlinkHostNetwork against real netlink, inside network namespaces these tests create.

Each fixture makes uniquely named namespaces (pvct-<hex>) and deletes them at teardown,
also when the test fails; a namespace takes its veths and bridge with it. iproute2 (`ip -j`)
checks what the kernel holds, independently of the code under test. The tests skip, with
the reason, without root or `ip netns`. Announcements use the installed arping, or a raw
socket without one (test_hostnet_garp.py tests each way).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from hypervisor.hostnet import FloatingAddress, HostNetworkError, NetlinkHostNetwork
from tests.helpers import wait_for

# Bounds on the iproute2 commands that build and inspect the test networks.
IP_COMMAND_TIMEOUT = 10.0
# How long a neighbour gets to act on a gratuitous ARP: it arrives within milliseconds.
NEIGHBOUR_UPDATE_TIMEOUT = 5.0
# A MAC no interface here has: the observer's stale entry before any announcement.
STALE_MAC = "02:00:00:00:00:01"
NETNS_DIR = Path("/run/netns")


def ip(*args: str) -> str:
    result = subprocess.run(
        ["ip", *args], capture_output=True, text=True, timeout=IP_COMMAND_TIMEOUT
    )
    if result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} exited {result.returncode}: {result.stderr}")
    return result.stdout


def ip_json(*args: str) -> Any:
    out = ip("-j", *args)
    return json.loads(out) if out.strip() else []


def addresses_on(netns: str, interface: str) -> set[str]:
    """What the kernel holds on the interface, as "address/prefixlen"."""
    links = ip_json("-n", netns, "addr", "show", "dev", interface)
    return {f"{a['local']}/{a['prefixlen']}" for link in links for a in link["addr_info"]}


def mac_of(netns: str, interface: str) -> str:
    return str(ip_json("-n", netns, "link", "show", "dev", interface)[0]["address"])


def neighbour_mac(netns: str, interface: str, address: str) -> str | None:
    entries = ip_json("-n", netns, "neigh", "show", address, "dev", interface)
    return entries[0].get("lladdr") if entries else None


def new_namespace_name() -> str:
    return f"pvct-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def make_namespace() -> Iterator[Any]:
    """A factory of fresh namespaces; every one it made is deleted at teardown."""
    if os.geteuid() != 0:
        pytest.skip("creating network namespaces needs root")
    if shutil.which("ip") is None:
        pytest.skip("iproute2's `ip` is not installed")
    made: list[str] = []

    def make() -> str:
        name = new_namespace_name()
        try:
            ip("netns", "add", name)
        except RuntimeError as exc:
            if not made:
                pytest.skip(f"`ip netns add` does not work here: {exc}")
            raise
        made.append(name)
        ip("-n", name, "link", "set", "lo", "up")
        return name

    try:
        yield make
    finally:
        for name in made:
            subprocess.run(
                ["ip", "netns", "del", name], capture_output=True, timeout=IP_COMMAND_TIMEOUT
            )


@pytest.fixture
def netns(make_namespace: Any) -> str:
    """One namespace with a veth pair pvcv0/pvcv1, both up."""
    name: str = make_namespace()
    ip("-n", name, "link", "add", "pvcv0", "type", "veth", "peer", "name", "pvcv1")
    ip("-n", name, "link", "set", "pvcv0", "up")
    ip("-n", name, "link", "set", "pvcv1", "up")
    return name


@pytest.fixture
def hostnet(netns: str) -> Iterator[NetlinkHostNetwork]:
    with NetlinkHostNetwork(netns) as network:
        yield network


@dataclass(frozen=True)
class Lan:
    """Two nodes on one segment with an observer: the observer's namespace holds the
    bridge (br0, 10.200.0.1/24) that each node's eth0 is plugged into."""

    observer: str
    node_a: str
    node_b: str


@pytest.fixture
def lan(make_namespace: Any) -> Lan:
    observer, node_a, node_b = make_namespace(), make_namespace(), make_namespace()
    ip("-n", observer, "link", "add", "br0", "type", "bridge")
    ip("-n", observer, "link", "set", "br0", "up")
    ip("-n", observer, "addr", "add", "10.200.0.1/24", "dev", "br0")
    for port, node in (("porta", node_a), ("portb", node_b)):
        ip(
            "-n",
            observer,
            "link",
            "add",
            port,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            node,
        )
        ip("-n", observer, "link", "set", port, "master", "br0", "up")
        ip("-n", node, "link", "set", "eth0", "up")
    return Lan(observer=observer, node_a=node_a, node_b=node_b)


def test_floating_address_parses_its_cidr() -> None:
    fa = FloatingAddress("pvcbr0", "fd00:200:0:0::fe/64")
    assert (fa.ip, fa.prefixlen, fa.version) == ("fd00:200::fe", 64, 6)
    assert FloatingAddress("pvcbr0", "10.200.0.254/24").prefixlen == 24
    with pytest.raises(ValueError, match="prefix length"):
        FloatingAddress("pvcbr0", "10.200.0.254")
    with pytest.raises(ValueError, match=r"10\.200\.0\.300"):
        FloatingAddress("pvcbr0", "10.200.0.300/24")
    with pytest.raises(ValueError, match="interface name"):
        FloatingAddress("a-name-longer-than-15", "10.200.0.254/24")


def test_add_and_remove_are_idempotent(hostnet: NetlinkHostNetwork, netns: str) -> None:
    fa = FloatingAddress("pvcv0", "10.200.0.254/24")
    assert not hostnet.has_address(fa)

    assert hostnet.add_address(fa) is True
    assert hostnet.has_address(fa)
    assert "10.200.0.254/24" in addresses_on(netns, "pvcv0")
    assert hostnet.add_address(fa) is False

    assert hostnet.remove_address(fa) is True
    assert not hostnet.has_address(fa)
    assert "10.200.0.254/24" not in addresses_on(netns, "pvcv0")
    assert hostnet.remove_address(fa) is False


def test_ipv6_address_is_added_without_dad_and_removed(
    hostnet: NetlinkHostNetwork, netns: str
) -> None:
    fa = FloatingAddress("pvcv0", "fd00:200::fe/64")
    assert hostnet.add_address(fa) is True
    # The same address spelled out in full is the same address.
    assert hostnet.has_address(FloatingAddress("pvcv0", "fd00:200:0:0:0:0:0:fe/64"))
    assert hostnet.add_address(fa) is False
    info = ip_json("-n", netns, "addr", "show", "dev", "pvcv0")[0]["addr_info"]
    (held,) = [a for a in info if a["local"] == "fd00:200::fe"]
    assert held["prefixlen"] == 64
    assert held.get("nodad") is True and not held.get("tentative")

    hostnet.announce(fa)  # nothing to send for IPv6; must not fail

    assert hostnet.remove_address(fa) is True
    assert "fd00:200::fe/64" not in addresses_on(netns, "pvcv0")
    assert hostnet.remove_address(fa) is False


def test_another_prefix_length_is_another_address(hostnet: NetlinkHostNetwork, netns: str) -> None:
    ip("-n", netns, "addr", "add", "10.200.0.254/32", "dev", "pvcv0")
    ip("-n", netns, "addr", "add", "fd00:200::fe/128", "dev", "pvcv0", "nodad")
    v4 = FloatingAddress("pvcv0", "10.200.0.254/24")
    v6 = FloatingAddress("pvcv0", "fd00:200::fe/64")

    assert not hostnet.has_address(v4)
    assert hostnet.remove_address(v4) is False
    assert hostnet.remove_address(v6) is False
    assert {"10.200.0.254/32", "fd00:200::fe/128"} <= addresses_on(netns, "pvcv0")
    # IPv4 can hold one address under two prefix lengths; IPv6 cannot.
    assert hostnet.add_address(v4) is True
    with pytest.raises(HostNetworkError, match="another prefix length"):
        hostnet.add_address(v6)


def test_add_on_a_missing_interface_names_it(hostnet: NetlinkHostNetwork, netns: str) -> None:
    fa = FloatingAddress("pvcnosuch0", "10.200.0.254/24")
    with pytest.raises(HostNetworkError) as raised:
        hostnet.add_address(fa)
    message = str(raised.value)
    assert "pvcnosuch0" in message and "10.200.0.254/24" in message and netns in message
    assert "does not exist" in message


def test_remove_and_has_on_a_missing_interface_are_false(hostnet: NetlinkHostNetwork) -> None:
    fa = FloatingAddress("pvcnosuch0", "10.200.0.254/24")
    assert hostnet.remove_address(fa) is False
    assert hostnet.has_address(fa) is False


def test_a_missing_namespace_is_an_error_and_is_not_created(make_namespace: Any) -> None:
    name = new_namespace_name()
    with pytest.raises(HostNetworkError, match=name):
        NetlinkHostNetwork(name)
    assert not (NETNS_DIR / name).exists()


def test_host_namespace_sees_loopback() -> None:
    """netns=None works on this process's own namespace; read-only, so safe on the host."""
    with NetlinkHostNetwork() as network:
        assert network.has_address(FloatingAddress("lo", "127.0.0.1/8"))
        assert not network.has_address(FloatingAddress("lo", "127.0.0.1/32"))


def test_calls_from_many_threads(hostnet: NetlinkHostNetwork, netns: str) -> None:
    # The node's own address comes first, so the floating ones are its secondaries: with
    # promote_secondaries=0 (the kernel default) removing a subnet's primary address also
    # removes every secondary of that subnet.
    ip("-n", netns, "addr", "add", "10.200.1.100/24", "dev", "pvcv0")
    addresses = [FloatingAddress("pvcv0", f"10.200.1.{n}/24") for n in range(1, 17)]
    errors: list[BaseException] = []

    def churn(fa: FloatingAddress) -> None:
        try:
            for _ in range(5):
                assert hostnet.add_address(fa) is True
                assert hostnet.has_address(fa)
                assert hostnet.remove_address(fa) is True
            assert hostnet.add_address(fa) is True
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=churn, args=(fa,)) for fa in addresses]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not errors
    assert {"10.200.1.100/24", *(fa.address for fa in addresses)} <= addresses_on(netns, "pvcv0")


def test_a_closed_network_refuses_calls(netns: str) -> None:
    network = NetlinkHostNetwork(netns)
    network.close()
    network.close()
    with pytest.raises(HostNetworkError, match="closed"):
        network.add_address(FloatingAddress("pvcv0", "10.200.0.254/24"))


def test_announce_on_a_missing_interface_names_it(lan: Lan) -> None:
    with NetlinkHostNetwork(lan.node_a) as network, pytest.raises(HostNetworkError) as raised:
        network.announce(FloatingAddress("pvcnosuch0", "10.200.0.254/24"))
    assert "pvcnosuch0" in str(raised.value) and lan.node_a in str(raised.value)


def test_takeover_moves_the_neighbours_entry(lan: Lan) -> None:
    """A holds the address and announces it, then B takes it over: the observer's entry
    follows each announcement. The observer starts with a stale entry, as a neighbour that
    talked to an earlier owner has: Linux repoints an existing entry on a gratuitous ARP and
    creates none (unless arp_accept=1), so without the announcement it would not change."""
    address = "10.200.0.254"
    fa = FloatingAddress("eth0", f"{address}/24")
    mac_a, mac_b = mac_of(lan.node_a, "eth0"), mac_of(lan.node_b, "eth0")
    ip(
        "-n",
        lan.observer,
        "neigh",
        "replace",
        address,
        "lladdr",
        STALE_MAC,
        "nud",
        "stale",
        "dev",
        "br0",
    )
    assert neighbour_mac(lan.observer, "br0", address) == STALE_MAC

    with NetlinkHostNetwork(lan.node_a) as node_a, NetlinkHostNetwork(lan.node_b) as node_b:
        assert node_a.add_address(fa) is True
        node_a.announce(fa)
        wait_for(
            lambda: neighbour_mac(lan.observer, "br0", address) == mac_a,
            timeout=NEIGHBOUR_UPDATE_TIMEOUT,
            what=f"the observer's entry for {address} to move to node A ({mac_a})",
        )

        assert node_a.remove_address(fa) is True
        assert node_b.add_address(fa) is True
        node_b.announce(fa)
        wait_for(
            lambda: neighbour_mac(lan.observer, "br0", address) == mac_b,
            timeout=NEIGHBOUR_UPDATE_TIMEOUT,
            what=f"the observer's entry for {address} to move to node B ({mac_b})",
        )
        assert not node_a.has_address(fa)
        assert node_b.has_address(fa)


def test_a_call_stuck_in_netlink_hits_the_deadline(netns: str) -> None:
    """Stand-in for a kernel that holds the RTNL lock: the owner thread is kept busy."""
    running, release = threading.Event(), threading.Event()
    fa = FloatingAddress("pvcv0", "10.200.0.254/24")

    def hold_the_socket(_ipr: Any) -> None:
        running.set()
        release.wait(10)

    def occupy(network: NetlinkHostNetwork) -> None:
        with contextlib.suppress(HostNetworkError):  # it times out too; that is expected
            network._netlink.call(hold_the_socket, "hold the socket")

    with NetlinkHostNetwork(netns, timeout=0.5) as network:
        busy = threading.Thread(target=occupy, args=(network,), daemon=True)
        busy.start()
        assert running.wait(5)
        started = time.monotonic()
        with pytest.raises(
            HostNetworkError, match=r"no answer from netlink within 0\.5s"
        ) as raised:
            network.add_address(fa)
        assert time.monotonic() - started < 2.0
        assert "10.200.0.254/24" in str(raised.value) and netns in str(raised.value)
        release.set()
        busy.join(timeout=5)
        # The abandoned call was skipped, not run late; the socket still works.
        assert not network.has_address(fa)
        assert network.add_address(fa) is True
