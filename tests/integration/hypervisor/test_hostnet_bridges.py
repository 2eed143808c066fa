"""NetlinkHostBridges against real netlink, inside network namespaces these tests create.

The namespaces come from test_hostnet_netlink's fixture (uniquely named, deleted at
teardown with every link in them). iproute2 (`ip -d -j`, `bridge -j fdb`) checks what the
kernel holds, independently of the code under test; a ping between two "guest" namespaces
checks that the VXLAN carries traffic. This kernel has no VLAN (8021q): the VLAN test skips
with vlan_supported()'s reason and another checks the error ensure() gives instead.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from hypervisor.hostnet import (
    BridgeSpec,
    BridgeState,
    HostNetworkError,
    NetlinkHostBridges,
    vlan_supported,
)
from tests.helpers import wait_for
from tests.integration.hypervisor import test_hostnet_netlink as netlink_tests
from tests.integration.hypervisor.test_hostnet_netlink import (
    IP_COMMAND_TIMEOUT,
    NETNS_DIR,
    ip,
    ip_json,
    new_namespace_name,
)

# Fixtures: a factory of fresh namespaces, each deleted at teardown; one namespace with a
# veth pair pvcv0/pvcv1, both up.
make_namespace = netlink_tests.make_namespace
netns = netlink_tests.netns

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")

VNI = 4242
UPLINK = f"vxlan{VNI}"
BRIDGE = "vmbr4242"
LOCAL, PEER = "10.77.0.1", "10.77.0.2"
# How long a ping through a just-set-up VXLAN gets to succeed (it does in milliseconds).
PING_TIMEOUT = 10.0


def link(netns: str, name: str) -> dict[str, Any] | None:
    """The link as `ip -d -j` shows it, None when absent."""
    links = [x for x in ip_json("-n", netns, "-d", "link", "show") if x["ifname"] == name]
    return links[0] if links else None


def link_names(netns: str) -> set[str]:
    return {x["ifname"] for x in ip_json("-n", netns, "link", "show")}


def flood_peers(netns: str, device: str = UPLINK) -> set[str]:
    """The dst of every all-zeros-MAC FDB entry of the device, read with `bridge`."""
    result = subprocess.run(
        ["bridge", "-n", netns, "-j", "fdb", "show", "dev", device],
        capture_output=True,
        text=True,
        timeout=IP_COMMAND_TIMEOUT,
        check=True,
    )
    entries = json.loads(result.stdout or "[]")
    return {e["dst"] for e in entries if e["mac"] == "00:00:00:00:00:00" and "dst" in e}


def vxlan_spec(local: str = LOCAL, **changes: Any) -> BridgeSpec:
    fields: dict[str, Any] = {
        "network": "tenant",
        "bridge": BRIDGE,
        "kind": "vxlan",
        "vni": VNI,
        "local": local,
        **changes,
    }
    return BridgeSpec(**fields)


@pytest.fixture
def host(netns: str) -> str:
    """A host namespace whose cluster underlay is pvcv0 (MTU 1500) holding LOCAL/24."""
    ip("-n", netns, "addr", "add", f"{LOCAL}/24", "dev", "pvcv0")
    return netns


@pytest.fixture
def bridges(host: str) -> Iterator[NetlinkHostBridges]:
    with NetlinkHostBridges(host) as backend:
        yield backend


def test_bridge_spec_checks_itself() -> None:
    assert vxlan_spec().uplink == UPLINK
    assert BridgeSpec("n", "vmbr7", "vlan", vlan=7, device="eth1").uplink == "vlan7"
    assert BridgeSpec("n", "vmbr7", "none").uplink is None
    with pytest.raises(ValueError, match="bridge name 'vmbr-far-too-long'"):
        vxlan_spec(bridge="vmbr-far-too-long")
    with pytest.raises(ValueError, match="vni"):
        BridgeSpec("n", "vmbr7", "vxlan", local=LOCAL)
    with pytest.raises(ValueError, match="local"):
        BridgeSpec("n", "vmbr7", "vxlan", vni=7)
    with pytest.raises(ValueError, match=r"10\.77\.0\.300"):
        vxlan_spec(local="10.77.0.300")
    with pytest.raises(ValueError, match="needs device"):
        BridgeSpec("n", "vmbr7", "vlan", vlan=7)
    with pytest.raises(ValueError, match="vlan id"):
        BridgeSpec("n", "vmbr7", "vlan", vlan=4095, device="eth1")
    with pytest.raises(ValueError, match="mtu"):
        vxlan_spec(mtu=10)


def test_ensure_is_idempotent_with_the_underlay_mtu_less_50(
    bridges: NetlinkHostBridges, host: str
) -> None:
    assert bridges.ensure(vxlan_spec()) is True

    bridge, uplink = link(host, BRIDGE), link(host, UPLINK)
    assert bridge is not None and uplink is not None
    assert bridge["ifalias"] == uplink["ifalias"] == "pvc:network=tenant"
    assert "UP" in bridge["flags"] and "UP" in uplink["flags"]
    assert bridge["mtu"] == uplink["mtu"] == 1450
    info = bridge["linkinfo"]["info_data"]
    assert (info["stp_state"], info["forward_delay"]) == (0, 0)
    vxlan = uplink["linkinfo"]["info_data"]
    assert (vxlan["id"], vxlan["local"], vxlan["port"], vxlan["learning"]) == (
        VNI,
        LOCAL,
        4789,
        False,
    )
    assert uplink["master"] == BRIDGE

    assert bridges.ensure(vxlan_spec()) is False
    assert bridges.list() == {
        BRIDGE: BridgeState("tenant", BRIDGE, up=True, mtu=1450, ports=(UPLINK,), peers=())
    }


def test_the_named_underlay_device_gives_the_mtu(bridges: NetlinkHostBridges, host: str) -> None:
    ip("-n", host, "link", "set", "pvcv0", "mtu", "9000")
    assert bridges.ensure(vxlan_spec(device="pvcv0")) is True
    uplink = link(host, UPLINK)
    assert uplink is not None and uplink["mtu"] == 8950
    assert uplink["linkinfo"]["info_data"]["link"] == "pvcv0"
    assert bridges.list()[BRIDGE].mtu == 8950


def test_an_mtu_change_is_applied(bridges: NetlinkHostBridges, host: str) -> None:
    bridges.ensure(vxlan_spec())
    assert bridges.ensure(vxlan_spec(mtu=1400)) is True
    assert [link(host, name)["mtu"] for name in (BRIDGE, UPLINK)] == [1400, 1400]  # type: ignore[index]
    assert bridges.ensure(vxlan_spec(mtu=1400)) is False
    # Larger than the underlay allows: refused, naming the link.
    with pytest.raises(HostNetworkError, match=f"MTU 1500 of {UPLINK}"):
        bridges.ensure(vxlan_spec(mtu=1500, device="pvcv0"))


def test_a_vni_or_local_change_recreates_the_uplink(bridges: NetlinkHostBridges, host: str) -> None:
    bridges.ensure(vxlan_spec())
    first = link(host, UPLINK)
    assert first is not None

    assert bridges.ensure(vxlan_spec(vni=4343)) is True
    assert link(host, UPLINK) is None
    moved = link(host, "vxlan4343")
    assert moved is not None and moved["master"] == BRIDGE
    assert moved["linkinfo"]["info_data"]["id"] == 4343
    assert bridges.list()[BRIDGE].ports == ("vxlan4343",)

    ip("-n", host, "addr", "add", "10.77.0.9/24", "dev", "pvcv0")
    assert bridges.ensure(vxlan_spec(vni=4343, local="10.77.0.9")) is True
    again = link(host, "vxlan4343")
    assert again is not None and again["ifindex"] != moved["ifindex"]
    assert again["linkinfo"]["info_data"]["local"] == "10.77.0.9"
    assert again["master"] == BRIDGE and "UP" in again["flags"]


def test_remove_leaves_what_was_there_before(bridges: NetlinkHostBridges, host: str) -> None:
    before = link_names(host)
    bridges.ensure(vxlan_spec())
    bridges.set_peers(vxlan_spec(), [PEER])
    # A VM's tap stand-in: libvirt puts it in the bridge, and it goes with the VM.
    ip("-n", host, "link", "add", "vnet0", "type", "veth", "peer", "name", "vnet0p")
    ip("-n", host, "link", "set", "vnet0", "master", BRIDGE)
    assert bridges.list()[BRIDGE].ports == ("vnet0", UPLINK)

    assert bridges.remove(BRIDGE) is True
    assert link_names(host) == before | {"vnet0", "vnet0p"}
    assert "master" not in link(host, "vnet0")  # type: ignore[operator]
    assert bridges.list() == {}
    assert bridges.remove(BRIDGE) is False


def test_links_pvc_did_not_make_are_not_listed_or_touched(
    bridges: NetlinkHostBridges, host: str
) -> None:
    ip("-n", host, "link", "add", "brforeign", "type", "bridge")
    ip("-n", host, "link", "add", UPLINK, "type", "vxlan", "id", "7", "dstport", "4789")
    bridges.ensure(vxlan_spec(bridge="vmbr1", vni=1))

    assert set(bridges.list()) == {"vmbr1"}
    with pytest.raises(HostNetworkError, match=r"brforeign.*not made by PVC"):
        bridges.remove("brforeign")
    with pytest.raises(HostNetworkError, match="brforeign exists and was not made by PVC"):
        bridges.ensure(vxlan_spec(bridge="brforeign", vni=2))
    with pytest.raises(HostNetworkError, match=f"{UPLINK} exists and was not made by PVC"):
        bridges.ensure(vxlan_spec())
    # Neither failed ensure left anything behind, nor changed the foreign links.
    assert BRIDGE not in link_names(host) and "vxlan2" not in link_names(host)
    foreign = link(host, "brforeign")
    assert foreign is not None and "ifalias" not in foreign and "UP" not in foreign["flags"]
    assert link(host, UPLINK)["linkinfo"]["info_data"]["id"] == 7  # type: ignore[index]
    # A bridge of one network is not another's.
    with pytest.raises(HostNetworkError, match="vmbr1 belongs to network tenant"):
        bridges.ensure(BridgeSpec("other", "vmbr1", "none"))


def test_set_peers_replaces_the_set_exactly(bridges: NetlinkHostBridges, host: str) -> None:
    spec = vxlan_spec()
    bridges.ensure(spec)
    assert bridges.set_peers(spec, ["10.77.0.2", "10.77.0.3", LOCAL]) is True
    assert flood_peers(host) == {"10.77.0.2", "10.77.0.3"}
    assert bridges.set_peers(spec, ["10.77.0.3", "10.77.0.4"]) is True
    assert flood_peers(host) == {"10.77.0.3", "10.77.0.4"}
    assert bridges.set_peers(spec, iter(["10.77.0.4", "10.77.0.3", "10.77.0.3"])) is False
    assert bridges.list()[BRIDGE].peers == ("10.77.0.3", "10.77.0.4")
    assert bridges.set_peers(spec, []) is True
    assert flood_peers(host) == set()

    with pytest.raises(HostNetworkError, match="not-an-address"):
        bridges.set_peers(spec, ["not-an-address"])
    with pytest.raises(HostNetworkError, match="not vxlan"):
        bridges.set_peers(BridgeSpec("tenant", BRIDGE, "none"), [PEER])
    with pytest.raises(HostNetworkError, match="vxlan99 does not exist"):
        bridges.set_peers(vxlan_spec(vni=99), [PEER])


@dataclass(frozen=True)
class Site:
    host: str
    guest: str
    local: str
    guest_address: str


def build_site(make_namespace: Any, local: str, guest_address: str) -> Site:
    host, guest = make_namespace(), make_namespace()
    ip("-n", host, "link", "add", "vnet0", "type", "veth", "peer", "name", "eth0", "netns", guest)
    ip("-n", guest, "addr", "add", f"{guest_address}/24", "dev", "eth0")
    ip("-n", guest, "link", "set", "eth0", "up")
    return Site(host=host, guest=guest, local=local, guest_address=guest_address)


def pings(source: Site, target: Site) -> bool:
    result = subprocess.run(
        ["ip", "netns", "exec", source.guest, "ping", "-c", "1", "-W", "1", target.guest_address],
        capture_output=True,
        timeout=IP_COMMAND_TIMEOUT,
    )
    return result.returncode == 0


def test_vxlan_carries_guest_traffic_between_two_hosts(make_namespace: Any) -> None:
    a = build_site(make_namespace, "10.78.0.1", "192.168.78.1")
    b = build_site(make_namespace, "10.78.0.2", "192.168.78.2")
    ip("-n", a.host, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", b.host)
    for site in (a, b):
        ip("-n", site.host, "addr", "add", f"{site.local}/24", "dev", "eth0")
        ip("-n", site.host, "link", "set", "eth0", "up")

    with NetlinkHostBridges(a.host) as host_a, NetlinkHostBridges(b.host) as host_b:
        specs = {site.host: vxlan_spec(local=site.local) for site in (a, b)}
        for backend, site, other in ((host_a, a, b), (host_b, b, a)):
            assert backend.ensure(specs[site.host]) is True
            assert backend.set_peers(specs[site.host], [other.local, site.local]) is True
            ip("-n", site.host, "link", "set", "vnet0", "master", BRIDGE, "up")

        wait_for(lambda: pings(a, b), timeout=PING_TIMEOUT, what="a ping from guest A to B")
        assert pings(b, a)

        # A has no peers: nothing it floods or sends to an unknown MAC leaves it.
        assert host_a.set_peers(specs[a.host], []) is True
        assert not pings(a, b)

        assert host_a.set_peers(specs[a.host], [b.local]) is True
        wait_for(lambda: pings(a, b), timeout=PING_TIMEOUT, what="the ping again, peers restored")


def test_vlan_on_a_device(make_namespace: Any) -> None:
    host = make_namespace()
    supported, reason = vlan_supported(host)
    if not supported:
        pytest.skip(reason)
    ip("-n", host, "link", "add", "eth1", "type", "veth", "peer", "name", "eth1p")
    spec = BridgeSpec("lan", "vmbr100", "vlan", vlan=100, device="eth1")
    before = link_names(host)
    with NetlinkHostBridges(host) as bridges:
        assert bridges.ensure(spec) is True
        vlan = link(host, "vlan100")
        assert vlan is not None and vlan["link"] == "eth1" and vlan["master"] == "vmbr100"
        assert vlan["linkinfo"]["info_data"]["id"] == 100
        assert bridges.ensure(spec) is False

        assert bridges.ensure(BridgeSpec("lan", "vmbr100", "vlan", vlan=101, device="eth1"))
        assert link(host, "vlan100") is None
        with pytest.raises(HostNetworkError, match="itself a VLAN interface"):
            bridges.ensure(BridgeSpec("lan2", "vmbr102", "vlan", vlan=102, device="vlan101"))

        assert bridges.remove("vmbr100") is True
        assert link_names(host) == before


def test_vlan_refused_by_this_kernel_says_so(bridges: NetlinkHostBridges, host: str) -> None:
    supported, reason = vlan_supported(host)
    if supported:
        pytest.skip("this kernel has VLAN (8021q); test_vlan_on_a_device covers it")
    assert "VLAN is not supported by this kernel (8021q)" in reason
    before = link_names(host)
    with pytest.raises(HostNetworkError) as raised:
        bridges.ensure(BridgeSpec("lan", "vmbr100", "vlan", vlan=100, device="pvcv0"))
    message = str(raised.value)
    assert "VLAN is not supported by this kernel (8021q)" in message
    assert "vlan100" in message and "pvcv0" in message and host in message
    assert link_names(host) == before  # the bridge it made first is gone again


def test_a_missing_underlay_device_is_named(bridges: NetlinkHostBridges, host: str) -> None:
    before = link_names(host)
    with pytest.raises(HostNetworkError) as raised:
        bridges.ensure(vxlan_spec(device="pvcnosuch0"))
    message = str(raised.value)
    assert "device pvcnosuch0 does not exist" in message and BRIDGE in message and host in message
    # No device named and no link holds the local address: the MTU is unknown.
    with pytest.raises(HostNetworkError, match=r"no link holds the local address 10\.77\.0\.99"):
        bridges.ensure(vxlan_spec(local="10.77.0.99"))
    assert link_names(host) == before


def test_a_missing_namespace_is_an_error_and_is_not_created(make_namespace: Any) -> None:
    name = new_namespace_name()
    with pytest.raises(HostNetworkError, match=name):
        NetlinkHostBridges(name)
    assert not (NETNS_DIR / name).exists()
    assert vlan_supported(name)[0] is False


def test_none_network_enslaves_a_device_and_releases_it(
    bridges: NetlinkHostBridges, host: str
) -> None:
    spec = BridgeSpec("flat", "vmbr0", "none", device="pvcv1")
    assert bridges.ensure(spec) is True
    assert link(host, "pvcv1")["master"] == "vmbr0"  # type: ignore[index]
    assert bridges.ensure(spec) is False
    assert bridges.list()["vmbr0"].ports == ("pvcv1",)
    assert bridges.remove("vmbr0") is True
    device = link(host, "pvcv1")
    assert device is not None and "master" not in device  # released, not deleted

    alone = BridgeSpec("local", "vmbr9", "none", mtu=1400)
    assert bridges.ensure(alone) is True
    assert bridges.list()["vmbr9"] == BridgeState("local", "vmbr9", True, 1400, (), ())


def test_calls_from_many_threads(bridges: NetlinkHostBridges, host: str) -> None:
    errors: list[BaseException] = []

    def churn(n: int) -> None:
        spec = vxlan_spec(network=f"net{n}", bridge=f"vmbr{n}", vni=n)
        try:
            for _ in range(3):
                assert bridges.ensure(spec) is True
                assert bridges.set_peers(spec, [f"10.77.0.{n + 100}"]) is True
                assert bridges.remove(spec.bridge) is True
            assert bridges.ensure(spec) is True
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=churn, args=(n,)) for n in range(1, 9)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not errors
    assert sorted(bridges.list()) == sorted(f"vmbr{n}" for n in range(1, 9))
    assert {f"vxlan{n}" for n in range(1, 9)} <= link_names(host)


def test_an_ipv6_underlay(bridges: NetlinkHostBridges, host: str) -> None:
    """Over IPv6 the VXLAN headers take 70 bytes, and peers must be IPv6 too."""
    ip("-n", host, "addr", "add", "fd00:77::1/64", "dev", "pvcv0", "nodad")
    spec = vxlan_spec(local="fd00:77:0::1")
    assert bridges.ensure(spec) is True
    uplink = link(host, UPLINK)
    assert uplink is not None and uplink["mtu"] == 1430
    assert uplink["linkinfo"]["info_data"]["local6"] == "fd00:77::1"
    assert bridges.ensure(spec) is False

    assert bridges.set_peers(spec, ["fd00:77::2", "fd00:77:0:0::1"]) is True
    assert flood_peers(host) == {"fd00:77::2"}
    with pytest.raises(HostNetworkError, match=r"peer 10\.77\.0\.2 is IPv4"):
        bridges.set_peers(spec, [PEER])


def test_ensure_corrects_what_was_changed_behind_its_back(
    bridges: NetlinkHostBridges, host: str
) -> None:
    bridges.ensure(vxlan_spec())
    ip("-n", host, "link", "set", UPLINK, "nomaster")
    ip("-n", host, "link", "set", UPLINK, "down")
    ip("-n", host, "link", "set", BRIDGE, "down", "type", "bridge", "stp_state", "1")
    ip("-n", host, "link", "set", BRIDGE, "type", "bridge", "forward_delay", "1500")

    assert bridges.ensure(vxlan_spec()) is True
    bridge, uplink = link(host, BRIDGE), link(host, UPLINK)
    assert bridge is not None and uplink is not None
    assert "UP" in bridge["flags"] and "UP" in uplink["flags"] and uplink["master"] == BRIDGE
    info = bridge["linkinfo"]["info_data"]
    assert (info["stp_state"], info["forward_delay"]) == (0, 0)
    assert bridges.ensure(vxlan_spec()) is False
