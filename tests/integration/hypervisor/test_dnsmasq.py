"""Dnsmasq against the real dnsmasq, with busybox udhcpc as the client, in namespaces.

A server namespace holds the network's bridge with the gateway address (as a hypervisor
holds a managed network's bridge); each client namespace is plugged into the bridge by a
veth, as a VM's NIC would be. udhcpc runs with `-s /bin/true`: its default script would
rewrite the host's /etc/resolv.conf. iproute2 and ss check what the kernel holds,
independently of the code under test. The module skips, with the reason, without root,
dnsmasq or busybox.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

import pytest

from hypervisor.dnsmasq import (
    DhcpHost,
    Dnsmasq,
    DnsmasqConfig,
    DnsmasqError,
    Lease,
    stale_instances,
)
from tests.helpers import wait_for
from tests.integration.hypervisor.test_hostnet_netlink import (  # noqa: F401 (fixture)
    IP_COMMAND_TIMEOUT,
    ip,
    mac_of,
    make_namespace,
)

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces and dnsmasq need root"),
    pytest.mark.skipif(
        shutil.which("dnsmasq") is None, reason="dnsmasq is not installed (Debian `dnsmasq-base`)"
    ),
    pytest.mark.skipif(
        shutil.which("busybox") is None, reason="busybox (udhcpc, nslookup) is not installed"
    ),
]

# dnsmasq pings an address before it first offers it (up to 3 s without an answer), so a
# client gets its first offer ~3 s after its first discover: udhcpc tries for 6 s.
UDHCPC_TRIES = 6
UDHCPC_COMMAND_TIMEOUT = 20.0
# A lease reaches the lease file as dnsmasq sends the ACK.
LEASE_FILE_TIMEOUT = 5.0
LEASE_OBTAINED = re.compile(r"lease of (\S+) obtained")

# Reserved client MACs (locally administered).
MAC_ONE = "52:54:00:77:00:01"
MAC_TWO = "52:54:00:77:00:02"


@dataclass(frozen=True)
class Segment:
    """A server namespace whose bridge holds ``gateway``/24 and the client namespaces
    plugged into it (each client's interface is eth0)."""

    server: str
    bridge: str
    gateway: str
    clients: tuple[str, ...]


def build_segment(
    new_namespace: Callable[[], str],
    server: str,
    bridge: str,
    gateway: str,
    clients: int,
    macs: tuple[str, ...],
) -> Segment:
    ip("-n", server, "link", "add", bridge, "type", "bridge")
    ip("-n", server, "link", "set", bridge, "up")
    ip("-n", server, "addr", "add", f"{gateway}/24", "dev", bridge)
    made: list[str] = []
    for index in range(clients):
        client, port = new_namespace(), f"{bridge}p{index}"
        ip(*f"-n {server} link add {port} type veth peer name eth0 netns {client}".split())
        ip("-n", server, "link", "set", port, "master", bridge, "up")
        if index < len(macs):
            ip("-n", client, "link", "set", "eth0", "address", macs[index])
        ip("-n", client, "link", "set", "eth0", "up")
        made.append(client)
    return Segment(server=server, bridge=bridge, gateway=gateway, clients=tuple(made))


def udhcpc(netns: str, script: Path | str = "/bin/true") -> str:
    """Run udhcpc once on the client's eth0 with ``script``; its output (and the script's)."""
    result = subprocess.run(
        [
            *("ip", "netns", "exec", netns, "busybox", "udhcpc", "-i", "eth0", "-n", "-q"),
            *("-t", str(UDHCPC_TRIES), "-T", "1", "-s", str(script)),
        ],
        capture_output=True,
        text=True,
        timeout=UDHCPC_COMMAND_TIMEOUT,
    )
    return result.stdout + result.stderr


def dhcp_client(netns: str) -> str | None:
    """The address the client is given, or None."""
    found = LEASE_OBTAINED.search(udhcpc(netns))
    return found.group(1) if found else None


def dhcp_domain(netns: str, folder: Path) -> str | None:
    """The domain name (DHCP option 15) the client is given, or None."""
    script = folder / "print-domain.sh"
    script.write_text('#!/bin/sh\n[ "$1" = bound ] && echo "pvc-domain=$domain"\nexit 0\n')
    script.chmod(0o755)
    found = re.search(r"pvc-domain=(\S*)", udhcpc(netns, script))
    return (found.group(1) or None) if found else None


def resolve(netns: str, name: str, server: str) -> str:
    """busybox nslookup's answer (and errors) for ``name`` from the DNS server ``server``."""
    result = subprocess.run(
        ["ip", "netns", "exec", netns, "busybox", "nslookup", name, server],
        capture_output=True,
        text=True,
        timeout=UDHCPC_COMMAND_TIMEOUT,
    )
    return result.stdout + result.stderr


def network_config(segment: Segment, name: str, **fields: object) -> DnsmasqConfig:
    prefix = segment.gateway.rsplit(".", 1)[0]
    base = DnsmasqConfig(
        network=name,
        interface=segment.bridge,
        address=segment.gateway,
        prefixlen=24,
        range_start=f"{prefix}.100",
        range_end=f"{prefix}.150",
    )
    return replace(base, **fields)  # type: ignore[arg-type]


def in_range(config: DnsmasqConfig, address: str | None) -> bool:
    assert address is not None and config.range_start and config.range_end
    value = ipaddress.IPv4Address(address)
    start, end = ipaddress.IPv4Address(config.range_start), ipaddress.IPv4Address(config.range_end)
    return start <= value <= end


def sockets(netns: str, protocol: str) -> list[tuple[str, int, str]]:
    """The listening sockets in the namespace: (local address, port, process column)."""
    flag = {"udp": "-lunp", "tcp": "-ltnp"}[protocol]
    out = subprocess.run(
        ["ip", "netns", "exec", netns, "ss", "-H", flag],
        capture_output=True,
        text=True,
        check=True,
        timeout=IP_COMMAND_TIMEOUT,
    ).stdout
    found = []
    for line in out.splitlines():
        fields = line.split()
        local, _, port = fields[3].rpartition(":")
        found.append((local, int(port), " ".join(fields[5:])))
    return found


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


@pytest.fixture
def server(make_namespace: Callable[[], str]) -> str:  # noqa: F811 (the imported fixture)
    return make_namespace()


@pytest.fixture
def rundir(tmp_path: Path) -> Path:
    return tmp_path / "dnsmasq"


class SegmentFactory(Protocol):
    def __call__(
        self, bridge: str, gateway: str, clients: int = 0, macs: tuple[str, ...] = ()
    ) -> Segment: ...


@pytest.fixture
def segment_of(make_namespace: Callable[[], str], server: str) -> SegmentFactory:  # noqa: F811
    """Bridges in the server namespace, each with its own client namespaces."""

    def build(bridge: str, gateway: str, clients: int = 0, macs: tuple[str, ...] = ()) -> Segment:
        return build_segment(make_namespace, server, bridge, gateway, clients, macs)

    return build


@pytest.fixture
def serve(server: str, rundir: Path) -> Iterator[Callable[[DnsmasqConfig], Dnsmasq]]:
    """Starts a Dnsmasq in the server namespace; every one is stopped at teardown, also
    when the test fails."""
    made: list[Dnsmasq] = []

    def start(config: DnsmasqConfig) -> Dnsmasq:
        dnsmasq = Dnsmasq(config, rundir, netns=server)
        made.append(dnsmasq)
        dnsmasq.start()
        return dnsmasq

    yield start
    for dnsmasq in made:
        dnsmasq.stop()


def lease_of(dnsmasq: Dnsmasq, mac: str) -> Lease:
    """The one lease of ``mac`` once it is in the lease file."""

    def find() -> list[Lease]:
        return [lease for lease in dnsmasq.leases() if lease.mac == mac]

    (lease,) = wait_for(find, LEASE_FILE_TIMEOUT, f"the lease of {mac} in the lease file")
    return lease


def test_client_gets_an_address_in_the_range_and_the_lease_shows_it(
    segment_of: SegmentFactory, serve: Callable[[DnsmasqConfig], Dnsmasq], rundir: Path
) -> None:
    segment = segment_of("vmbr77", "10.77.1.1", clients=1)
    (client,) = segment.clients
    config = network_config(segment, "net77")
    dnsmasq = serve(config)
    assert dnsmasq.running()
    pid = dnsmasq.pid
    dnsmasq.start()  # the same config: kept
    assert dnsmasq.pid == pid

    address = dhcp_client(client)
    assert in_range(config, address)
    mac = mac_of(client, "eth0")
    lease = lease_of(dnsmasq, mac)
    assert (lease.ip, lease.hostname) == (address, None)
    assert time.time() < lease.expires <= time.time() + 3600
    assert dnsmasq.lease_mtime() is not None

    # A change beyond the reservations restarts dnsmasq; the lease survives it.
    dnsmasq.update(replace(config, range_end="10.77.1.200"))
    assert dnsmasq.running() and dnsmasq.pid != pid
    assert "dhcp-range=10.77.1.100,10.77.1.200" in (rundir / "net77.conf").read_text()
    assert lease_of(dnsmasq, mac).ip == address
    assert dhcp_client(client) == address  # the same client is given back its address


def test_reservations_apply_and_a_new_one_applies_without_a_restart(
    segment_of: SegmentFactory, serve: Callable[[DnsmasqConfig], Dnsmasq], tmp_path: Path
) -> None:
    segment = segment_of("vmbr78", "10.77.2.1", clients=2, macs=(MAC_ONE, MAC_TWO))
    first, second = segment.clients
    config = network_config(segment, "net78", hosts=(DhcpHost(MAC_ONE, "10.77.2.50", "vm1"),))
    dnsmasq = serve(config)
    pid = dnsmasq.pid

    assert dhcp_client(first) == "10.77.2.50"
    lease = lease_of(dnsmasq, MAC_ONE)
    assert (lease.ip, lease.hostname) == ("10.77.2.50", "vm1")

    dnsmasq.update(replace(config, hosts=(*config.hosts, DhcpHost(MAC_TWO, "10.77.2.51"))))
    assert dnsmasq.pid == pid  # reloaded by SIGHUP, not restarted
    assert dhcp_client(second) == "10.77.2.51"
    assert dhcp_client(first) == "10.77.2.50"

    # Without DNS, the domain is a DHCP option that a SIGHUP applies too.
    assert dhcp_domain(first, tmp_path) is None
    dnsmasq.update(replace(dnsmasq.config, domain="net78.example"))
    assert dnsmasq.pid == pid
    assert dhcp_domain(first, tmp_path) == "net78.example"


def test_reservations_only_network_serves_reserved_clients_alone(
    segment_of: SegmentFactory, serve: Callable[[DnsmasqConfig], Dnsmasq]
) -> None:
    segment = segment_of("vmbr79", "10.77.3.1", clients=2, macs=(MAC_ONE, MAC_TWO))
    reserved, stranger = segment.clients
    only = {"range_start": None, "range_end": None, "hosts": (DhcpHost(MAC_ONE, "10.77.3.9"),)}
    serve(network_config(segment, "net79", **only))
    assert dhcp_client(reserved) == "10.77.3.9"
    assert dhcp_client(stranger) is None


def test_dns_is_bound_on_the_gateway_address_only(
    segment_of: SegmentFactory, serve: Callable[[DnsmasqConfig], Dnsmasq], server: str
) -> None:
    segment = segment_of("vmbr80", "10.77.4.1", clients=1, macs=(MAC_ONE,))
    # A second address on the bridge: dnsmasq must not answer on it.
    ip("-n", server, "addr", "add", "10.77.4.2/24", "dev", "vmbr80")
    host = DhcpHost(MAC_ONE, "10.77.4.60", "vm1")
    dnsmasq = serve(
        network_config(segment, "net80", domain="net80.example", dns_port=53, hosts=(host,))
    )
    marker = f"pid={dnsmasq.pid},"

    for protocol in ("udp", "tcp"):
        dns = [(addr, port) for addr, port, proc in sockets(server, protocol) if port == 53]
        assert dns == [("10.77.4.1", 53)], protocol
    # DHCP: dnsmasq binds 0.0.0.0:67 (it must see broadcasts from clients with no address)
    # and answers only on the bridge that holds its address; no other UDP port of its own.
    ours = sorted((addr, port) for addr, port, proc in sockets(server, "udp") if marker in proc)
    assert ours == [("0.0.0.0", 67), ("10.77.4.1", 53)]

    assert dhcp_client(segment.clients[0]) == "10.77.4.60"
    assert "10.77.4.60" in resolve(server, "vm1.net80.example", "10.77.4.1")

    # With DNS, the domain also names the clients in DNS: changing it restarts dnsmasq.
    pid = dnsmasq.pid
    dnsmasq.update(replace(dnsmasq.config, domain="renamed.example"))
    assert dnsmasq.running() and dnsmasq.pid != pid
    assert dhcp_client(segment.clients[0]) == "10.77.4.60"
    assert "10.77.4.60" in resolve(server, "vm1.renamed.example", "10.77.4.1")


def test_stop_leaves_no_process_and_never_signals_a_stranger(
    segment_of: SegmentFactory,
    serve: Callable[[DnsmasqConfig], Dnsmasq],
    server: str,
    rundir: Path,
) -> None:
    config = network_config(segment_of("vmbr81", "10.77.5.1"), "net81")
    dnsmasq = serve(config)
    pid = dnsmasq.pid
    assert pid is not None and stale_instances(rundir) == [pid]

    # A daemon restart: a new Dnsmasq finds the running one through the pid file and keeps it.
    again = Dnsmasq(config, rundir, netns=server)
    assert again.adopt() and again.running() and again.pid == pid
    again.start()
    assert again.pid == pid

    again.stop()
    assert not alive(pid)
    assert stale_instances(rundir) == []
    assert not dnsmasq.running() and not (rundir / "net81.pid").exists()

    stranger = subprocess.Popen(["sleep", "60"])
    try:
        (rundir / "net81.pid").write_text(f"{stranger.pid}\n")
        assert not dnsmasq.adopt()
        dnsmasq.stop()
        assert stranger.poll() is None and alive(stranger.pid)
    finally:
        stranger.kill()
        stranger.wait()

    # A dnsmasq whose pid file is lost (a crash between spawn and pid file, say) is found
    # by its command line: the next start replaces it rather than running beside it.
    dnsmasq.start()
    lost = dnsmasq.pid
    (rundir / "net81.pid").unlink()
    fresh = Dnsmasq(config, rundir, netns=server)
    assert not fresh.adopt()
    fresh.start()
    assert lost is not None and not alive(lost)
    assert stale_instances(rundir) == [fresh.pid]
    fresh.stop()
    assert stale_instances(rundir) == []


def test_an_address_the_bridge_does_not_hold_fails_and_starts_nothing(
    segment_of: SegmentFactory, server: str, rundir: Path
) -> None:
    config = replace(
        network_config(segment_of("vmbr82", "10.77.6.1"), "net82"), address="10.77.6.7"
    )
    dnsmasq = Dnsmasq(config, rundir, netns=server)
    with pytest.raises(DnsmasqError, match=r"vmbr82 does not hold 10\.77\.6\.7/24"):
        dnsmasq.start()
    assert not dnsmasq.running() and stale_instances(rundir) == []


def test_dnsmasq_failing_to_start_raises_with_the_logged_reason(
    segment_of: SegmentFactory,
    serve: Callable[[DnsmasqConfig], Dnsmasq],
    server: str,
    rundir: Path,
) -> None:
    """Two networks given the same gateway: the second dnsmasq cannot bind its DNS port."""
    segment = segment_of("vmbr87", "10.77.10.1")
    first = serve(network_config(segment, "net87", dns_port=53))
    second = Dnsmasq(network_config(segment, "net88", dns_port=53), rundir, netns=server)
    with pytest.raises(DnsmasqError) as failed:
        second.start()
    message = str(failed.value)
    assert str(rundir / "net88.log") in message
    assert "failed to create listening socket for 10.77.10.1" in message
    assert not second.running()
    assert stale_instances(rundir) == [first.pid]


def test_two_networks_in_one_namespace_both_serve(
    segment_of: SegmentFactory, serve: Callable[[DnsmasqConfig], Dnsmasq], rundir: Path
) -> None:
    segments = [segment_of("vmbr83", "10.77.7.1", 1), segment_of("vmbr84", "10.77.8.1", 1)]
    configs = [network_config(segment, f"net8{n}") for n, segment in enumerate(segments, 3)]
    servers = [serve(config) for config in configs]
    assert len(stale_instances(rundir)) == 2

    for segment, config, dnsmasq in zip(segments, configs, servers, strict=True):
        (client,) = segment.clients
        address = dhcp_client(client)
        assert in_range(config, address)
        assert lease_of(dnsmasq, mac_of(client, "eth0")).ip == address


def test_the_lease_file_drops_expired_leases(rundir: Path) -> None:
    rundir.mkdir()
    now = int(time.time())
    (rundir / "net85.leases").write_text(
        f"{now + 600} 52:54:00:77:00:01 10.77.9.10 vm1 01:52:54:00:77:00:01\n"
        f"{now - 600} 52:54:00:77:00:02 10.77.9.11 * *\n"
        "0 52:54:00:77:00:03 10.77.9.12 * *\n"
        "duid 00:01:00:01:2c:aa:bb:cc:52:54:00:77:00:09\n"
    )
    config = DnsmasqConfig("net85", "vmbr85", "10.77.9.1", 24, "10.77.9.100", "10.77.9.150")
    leases = Dnsmasq(config, rundir).leases()
    assert [(lease.ip, lease.hostname, lease.expires) for lease in leases] == [
        ("10.77.9.10", "vm1", now + 600),
        ("10.77.9.12", None, 0),
    ]


def test_config_refuses_what_dnsmasq_would_misread() -> None:
    good = DnsmasqConfig("net86", "vmbr86", "10.77.9.1", 24, "10.77.9.100", "10.77.9.150")
    with pytest.raises(ValueError, match="outside"):
        replace(good, range_end="10.78.0.1")
    with pytest.raises(ValueError, match="together"):
        replace(good, range_end=None)
    with pytest.raises(ValueError, match="DNS label"):
        replace(good, network="Net_86")
    with pytest.raises(ValueError, match="lease time"):
        replace(good, lease_time="1h\nport=53")
    with pytest.raises(ValueError, match="MAC"):
        DhcpHost("52:54:00:77:00", "10.77.9.5")
