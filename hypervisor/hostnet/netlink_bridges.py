"""PVC networks' host bridges through netlink (pyroute2).

Each network is a Linux bridge (STP off, forward delay 0, so a tap forwards at once) with
one uplink port: ``vxlan<vni>`` (no learning; the FDB's all-zeros-MAC entries, one per peer
host, replicate broadcast and unknown unicast to every peer) or ``vlan<id>`` on a device, or
an existing device enslaved as it is. PVC sets the alias ``pvc:network=<name>`` on the
links it makes, right after making them (the kernel ignores an alias in the request that
creates a link), and only ever lists, changes or removes links that carry it.

Netlink calls run in the thread that owns the pyroute2 socket (_netlink_thread.py); each
call of this backend is one function run there, so a call sees no other call's half.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import os
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from pyroute2.netlink.exceptions import NetlinkError

from hypervisor.hostnet._netlink_thread import NetlinkThread, describe_namespace, link_index
from hypervisor.hostnet.base import HostNetworkError
from hypervisor.hostnet.bridges import (
    VXLAN_OVERHEAD_IPV4,
    VXLAN_OVERHEAD_IPV6,
    BridgeSpec,
    BridgeState,
    HostBridges,
    network_of_alias,
)

log = logging.getLogger(__name__)

# Default of NetlinkHostBridges' timeout; the daemon passes its config's value.
DEFAULT_BRIDGES_TIMEOUT = 10.0

IFF_UP = 0x1
# The destination MAC of a VXLAN FDB entry that floods: broadcast, multicast and unknown
# unicast go to every such entry's dst (head-end replication).
FLOOD_MAC = "00:00:00:00:00:00"
VLAN_UNSUPPORTED = "VLAN is not supported by this kernel (8021q)"


@dataclass(frozen=True)
class _Link:
    """What this module reads of a link."""

    index: int
    name: str
    kind: str | None
    alias: str | None
    master: int | None
    lower: int | None  # IFLA_LINK: the device a VLAN sits on
    mtu: int
    up: bool
    data: dict[str, Any] = field(default_factory=dict)  # IFLA_INFO_DATA, by attribute name

    @property
    def network(self) -> str | None:
        """The PVC network that made this link; None when PVC did not make it."""
        return network_of_alias(self.alias)


def _parse_link(msg: Any) -> _Link:
    info = msg.get_attr("IFLA_LINKINFO")
    kind = info.get_attr("IFLA_INFO_KIND") if info is not None else None
    info_data = info.get_attr("IFLA_INFO_DATA") if info is not None else None
    # A kind pyroute2 has no decoder for leaves IFLA_INFO_DATA as raw bytes.
    data: dict[str, Any] = {}
    if info_data is not None and hasattr(info_data, "get_attr"):
        data = dict(info_data["attrs"])
    return _Link(
        index=int(msg["index"]),
        name=msg.get_attr("IFLA_IFNAME"),
        kind=kind,
        alias=msg.get_attr("IFLA_IFALIAS"),
        master=msg.get_attr("IFLA_MASTER") or None,
        lower=msg.get_attr("IFLA_LINK") or None,
        mtu=int(msg.get_attr("IFLA_MTU")),
        up=bool(msg["flags"] & IFF_UP),
        data=data,
    )


def _get_link(ipr: Any, name: str) -> _Link | None:
    index = link_index(ipr, name)
    if index is None:
        return None
    try:
        return _parse_link(ipr.link("get", index=index)[0])
    except NetlinkError as exc:
        if exc.code == errno.ENODEV:
            return None  # gone since the lookup
        raise


def _all_links(ipr: Any) -> tuple[_Link, ...]:
    return tuple(_parse_link(msg) for msg in ipr.link("dump"))


def _reason(exc: NetlinkError) -> str:
    return os.strerror(exc.code) if exc.code else str(exc)


def _flood_peers(ipr: Any, index: int) -> set[str]:
    """The dst of every all-zeros-MAC FDB entry of the VXLAN link ``index``."""
    peers: set[str] = set()
    for msg in ipr.fdb("dump", ifindex=index):
        dst = msg.get_attr("NDA_DST")
        if msg["ifindex"] == index and msg.get_attr("NDA_LLADDR") == FLOOD_MAC and dst:
            peers.add(str(ipaddress.ip_address(dst)))
    return peers


def _owner_problem(link: _Link, network: str) -> str | None:
    """Why ``network`` may not touch ``link``; None when it may."""
    if link.network == network:
        return None
    if link.network is None:
        return f"{link.name} exists and was not made by PVC"
    return f"{link.name} belongs to network {link.network}"


class _Ensure:
    """One ensure() call, run in the netlink thread: what it changed and what it made."""

    def __init__(self, ipr: Any, spec: BridgeSpec, what: str) -> None:
        self.ipr = ipr
        self.spec = spec
        self.what = what
        self.changed = False
        self.created: list[int] = []

    def run(self) -> bool:
        try:
            self._run()
        except BaseException:
            self._remove_created()
            raise
        return self.changed

    def _run(self) -> None:
        underlay = self._underlay()
        mtu = self._mtu(underlay)
        bridge = self._bridge()
        port = self._uplink(underlay)
        self._remove_stale_uplinks(keep=port)
        if port is not None:
            self._attach(port, bridge, mtu)
        self._finish_bridge(bridge, mtu)

    def _fail(self, problem: str) -> HostNetworkError:
        return HostNetworkError(f"{self.what}: {problem}")

    def _set(self, link: _Link, step: str, **changes: Any) -> None:
        try:
            self.ipr.link("set", index=link.index, **changes)
        except NetlinkError as exc:
            raise self._fail(f"cannot {step} of {link.name}: {_reason(exc)}") from exc
        self.changed = True

    def _delete(self, link: _Link, why: str) -> None:
        try:
            self.ipr.link("del", index=link.index)
        except NetlinkError as exc:
            if exc.code != errno.ENODEV:
                raise self._fail(f"cannot delete {link.name} ({why}): {_reason(exc)}") from exc
        self.changed = True
        log.info(
            "event=bridge_link_deleted network=%s link=%s reason=%r",
            self.spec.network,
            link.name,
            why,
        )

    def _create(self, name: str, **kwargs: Any) -> _Link:
        """Create a link, mark it as this network's and return it."""
        try:
            self.ipr.link("add", ifname=name, **kwargs)
        except NetlinkError as exc:
            if kwargs["kind"] == "vlan" and exc.code == errno.EOPNOTSUPP:
                problem = f"cannot create {name} on {self.spec.device}: {VLAN_UNSUPPORTED}"
                raise self._fail(problem) from exc
            raise self._fail(f"cannot create {name}: {_reason(exc)}") from exc
        link = _get_link(self.ipr, name)
        if link is None:
            raise self._fail(f"{name} vanished as soon as it was created")
        self.created.append(link.index)
        self.changed = True
        self._set(link, "set the alias", ifalias=self.spec.alias)
        return replace(link, alias=self.spec.alias)

    def _remove_created(self) -> None:
        for index in reversed(self.created):
            try:
                self.ipr.link("del", index=index)
            except NetlinkError as exc:
                log.warning(
                    "event=bridge_rollback_failed network=%s index=%d error=%r",
                    self.spec.network,
                    index,
                    _reason(exc),
                )

    def _underlay(self) -> _Link | None:
        spec = self.spec
        if spec.device is None:
            return None
        device = _get_link(self.ipr, spec.device)
        if device is None:
            raise self._fail(f"device {spec.device} does not exist")
        if spec.kind == "vlan" and device.kind == "vlan":
            raise self._fail(
                f"device {spec.device} is itself a VLAN interface: name the device "
                f"vlan{spec.vlan} should sit on"
            )
        if spec.kind == "none" and device.network is not None:
            raise self._fail(f"device {spec.device} is a link PVC made for {device.network}")
        return device

    def _mtu(self, underlay: _Link | None) -> int | None:
        """The MTU of the bridge and of the uplink PVC makes; None leaves the kernel's."""
        spec = self.spec
        if spec.mtu is not None or spec.kind != "vxlan":
            return spec.mtu
        assert spec.local is not None  # BridgeSpec checks it for vxlan
        local = ipaddress.ip_address(spec.local)
        lower = underlay or self._link_holding(local)
        if lower is None:
            raise self._fail(
                f"no link holds the local address {spec.local}, so the underlay's MTU is "
                "unknown: name the underlay device or set the mtu"
            )
        overhead = VXLAN_OVERHEAD_IPV4 if local.version == 4 else VXLAN_OVERHEAD_IPV6
        return lower.mtu - overhead

    def _link_holding(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> _Link | None:
        for msg in self.ipr.addr("dump"):
            held = msg.get_attr("IFA_LOCAL") or msg.get_attr("IFA_ADDRESS")
            if held and ipaddress.ip_address(held) == address:
                return _parse_link(self.ipr.link("get", index=msg["index"])[0])
        return None

    def _bridge(self) -> _Link:
        spec = self.spec
        found = _get_link(self.ipr, spec.bridge)
        if found is None:
            return self._create(spec.bridge, kind="bridge", br_stp_state=0, br_forward_delay=0)
        problem = _owner_problem(found, spec.network)
        if problem is not None:
            raise self._fail(problem)
        if found.kind != "bridge":
            raise self._fail(f"{found.name} is a {found.kind} link, not a bridge")
        # Two requests: the kernel refuses a forward delay under 2 s while STP is on, and
        # applies the delay before the STP state within one request.
        if found.data.get("IFLA_BR_STP_STATE") != 0:
            self._set(found, "turn off STP", kind="bridge", br_stp_state=0)
        if found.data.get("IFLA_BR_FORWARD_DELAY") != 0:
            self._set(found, "set forward delay 0", kind="bridge", br_forward_delay=0)
        return found

    def _uplink(self, underlay: _Link | None) -> _Link | None:
        """The uplink port, made or remade as the spec says; a ``none`` network's device."""
        spec = self.spec
        if spec.kind == "none":
            return underlay
        name = str(spec.uplink)
        found = _get_link(self.ipr, name)
        if found is not None:
            problem = _owner_problem(found, spec.network)
            if problem is not None:
                raise self._fail(problem)
            if self._matches(found, underlay):
                return found
            self._delete(found, "its vni, vlan, local address, port or device changed")
        if spec.kind == "vlan":
            assert underlay is not None and spec.vlan is not None  # BridgeSpec checks them
            return self._create(name, kind="vlan", vlan_id=spec.vlan, link=underlay.index)
        assert spec.local is not None
        local = ipaddress.ip_address(spec.local)
        vxlan: dict[str, Any] = {
            "kind": "vxlan",
            "vxlan_id": spec.vni,
            "vxlan_local" if local.version == 4 else "vxlan_local6": str(local),
            "vxlan_port": spec.port,
            "vxlan_learning": 0,
        }
        if underlay is not None:
            vxlan["vxlan_link"] = underlay.index
        return self._create(name, **vxlan)

    def _matches(self, port: _Link, underlay: _Link | None) -> bool:
        spec = self.spec
        lower = underlay.index if underlay is not None else None
        if spec.kind == "vlan":
            return (
                port.kind == "vlan"
                and port.data.get("IFLA_VLAN_ID") == spec.vlan
                and port.lower == lower
            )
        local = port.data.get("IFLA_VXLAN_LOCAL") or port.data.get("IFLA_VXLAN_LOCAL6")
        return (
            port.kind == "vxlan"
            and port.data.get("IFLA_VXLAN_ID") == spec.vni
            and local is not None
            and ipaddress.ip_address(local) == ipaddress.ip_address(str(spec.local))
            and port.data.get("IFLA_VXLAN_PORT") == spec.port
            and not port.data.get("IFLA_VXLAN_LEARNING")
            and (port.data.get("IFLA_VXLAN_LINK") or None) == lower
        )

    def _remove_stale_uplinks(self, keep: _Link | None) -> None:
        """Uplinks this network had under another name (another vni, vlan or kind)."""
        for link in _all_links(self.ipr):
            stale = link.network == self.spec.network and link.kind != "bridge"
            if stale and (keep is None or link.index != keep.index):
                self._delete(link, f"not the uplink of network {self.spec.network} any more")

    def _attach(self, port: _Link, bridge: _Link, mtu: int | None) -> None:
        made_by_pvc = port.network == self.spec.network
        if not made_by_pvc and port.master not in (None, bridge.index):
            raise self._fail(f"device {port.name} is already a port of another bridge")
        if made_by_pvc and mtu is not None and port.mtu != mtu:
            self._set(port, f"set the MTU {mtu}", mtu=mtu)
        if port.master != bridge.index:
            self._set(port, f"enslave it to {bridge.name}", master=bridge.index)
        if not port.up:
            self._set(port, "bring up", state="up")

    def _finish_bridge(self, bridge: _Link, mtu: int | None) -> None:
        # Read again: a new port may have lowered the MTU the kernel chose for the bridge.
        now = _get_link(self.ipr, bridge.name)
        if now is None:
            raise self._fail(f"{bridge.name} vanished while being set up")
        if mtu is not None and now.mtu != mtu:
            self._set(now, f"set the MTU {mtu}", mtu=mtu)
        if not now.up:
            self._set(now, "bring up", state="up")


class NetlinkHostBridges(HostBridges):
    """PVC's bridges in the host's own network namespace (``netns=None``) or in a named one
    (``ip netns`` name), which must exist."""

    def __init__(self, netns: str | None = None, timeout: float = DEFAULT_BRIDGES_TIMEOUT) -> None:
        self.netns = netns
        self._where = describe_namespace(netns)
        self._netlink = NetlinkThread(netns, timeout, self._where)

    def ensure(self, spec: BridgeSpec) -> bool:
        what = f"cannot set up bridge {spec.bridge} of network {spec.network} in {self._where}"
        changed = self._netlink.run(lambda ipr: _Ensure(ipr, spec, what).run(), what)
        log.info(
            "event=bridge_ensure network=%s bridge=%s kind=%s netns=%s changed=%s",
            spec.network,
            spec.bridge,
            spec.kind,
            self.netns,
            changed,
        )
        return changed

    def set_peers(self, spec: BridgeSpec, peers: Iterable[str]) -> bool:
        what = f"cannot set the peers of {spec.uplink} of network {spec.network} in {self._where}"
        if spec.kind != "vxlan":
            raise HostNetworkError(f"{what}: the network is {spec.kind}, not vxlan")
        wanted = _peer_addresses(spec, peers, what)

        def apply(ipr: Any) -> bool:
            port = _get_link(ipr, str(spec.uplink))
            if port is None:
                raise HostNetworkError(f"{what}: {spec.uplink} does not exist (ensure it first)")
            problem = _owner_problem(port, spec.network)
            if problem is not None:
                raise HostNetworkError(f"{what}: {problem}")
            held = _flood_peers(ipr, port.index)
            # New peers first, so that replacing the set never floods to nobody.
            for peer in sorted(wanted - held):
                ipr.fdb("append", ifindex=port.index, lladdr=FLOOD_MAC, dst=peer)
            for peer in sorted(held - wanted):
                try:
                    ipr.fdb("del", ifindex=port.index, lladdr=FLOOD_MAC, dst=peer)
                except NetlinkError as exc:
                    if exc.code != errno.ENOENT:
                        raise
            return held != wanted

        changed = self._netlink.run(apply, what)
        log.info(
            "event=bridge_peers network=%s link=%s netns=%s peers=%d changed=%s",
            spec.network,
            spec.uplink,
            self.netns,
            len(wanted),
            changed,
        )
        return changed

    def remove(self, bridge: str) -> bool:
        what = f"cannot remove bridge {bridge} in {self._where}"

        def remove(ipr: Any) -> bool:
            found = _get_link(ipr, bridge)
            if found is None:
                return False
            if found.network is None:
                raise HostNetworkError(f"{what}: it was not made by PVC")
            if found.kind != "bridge":
                raise HostNetworkError(f"{what}: it is a {found.kind} link, not a bridge")
            # Its uplink, and one left unattached by an ensure that failed half-way; not an
            # uplink of the same network in another bridge (the network's bridge renamed).
            for link in _all_links(ipr):
                if (
                    link.network == found.network
                    and link.kind != "bridge"
                    and link.master in (None, found.index)
                ):
                    _delete_if_present(ipr, link.index)
            _delete_if_present(ipr, found.index)
            return True

        removed = self._netlink.run(remove, what)
        log.info("event=bridge_remove bridge=%s netns=%s removed=%s", bridge, self.netns, removed)
        return removed

    def close(self) -> None:
        self._netlink.close()

    # Last in the class: below this, the name `list` means the method.
    def list(self) -> dict[str, BridgeState]:
        return self._netlink.run(_bridge_states, f"cannot list the bridges in {self._where}")


def _bridge_states(ipr: Any) -> dict[str, BridgeState]:
    links = _all_links(ipr)
    states: dict[str, BridgeState] = {}
    for bridge in links:
        if bridge.kind != "bridge" or bridge.network is None:
            continue
        ports = [link for link in links if link.master == bridge.index]
        peers: set[str] = set()
        for port in ports:
            if port.kind == "vxlan" and port.network == bridge.network:
                peers |= _flood_peers(ipr, port.index)
        states[bridge.name] = BridgeState(
            network=bridge.network,
            bridge=bridge.name,
            up=bridge.up,
            mtu=bridge.mtu,
            ports=tuple(sorted(port.name for port in ports)),
            peers=tuple(sorted(peers)),
        )
    return states


def _delete_if_present(ipr: Any, index: int) -> None:
    try:
        ipr.link("del", index=index)
    except NetlinkError as exc:
        if exc.code != errno.ENODEV:
            raise


def _peer_addresses(spec: BridgeSpec, peers: Iterable[str], what: str) -> set[str]:
    """The peers in canonical form, without this host's own address."""
    local = ipaddress.ip_address(str(spec.local))
    wanted: set[str] = set()
    for peer in peers:
        try:
            address = ipaddress.ip_address(peer)
        except ValueError as exc:
            raise HostNetworkError(f"{what}: {exc}") from None
        if address.version != local.version:
            raise HostNetworkError(
                f"{what}: peer {peer} is IPv{address.version}, the local address "
                f"{spec.local} IPv{local.version}"
            )
        if address != local:
            wanted.add(str(address))
    return wanted


def vlan_supported(
    netns: str | None = None, timeout: float = DEFAULT_BRIDGES_TIMEOUT
) -> tuple[bool, str]:
    """Whether the kernel makes VLAN links, and why not: tries a throwaway VLAN on a
    throwaway bridge in the namespace and deletes both. Never raises: a check that could
    not run is a False with its reason."""
    where = describe_namespace(netns)
    suffix = secrets.token_hex(3)
    bridge, vlan = f"pvcvlanb{suffix}", f"pvcvlanv{suffix}"

    def probe(ipr: Any) -> tuple[bool, str]:
        ipr.link("add", ifname=bridge, kind="bridge")
        index = link_index(ipr, bridge)
        try:
            ipr.link("add", ifname=vlan, kind="vlan", vlan_id=1, link=index)
            # The VLAN would go with its bridge; deleted first all the same.
            vlan_index = link_index(ipr, vlan)
            if vlan_index is not None:
                _delete_if_present(ipr, vlan_index)
        except NetlinkError as exc:
            if exc.code == errno.EOPNOTSUPP:
                return False, f"{VLAN_UNSUPPORTED} in {where}"
            return False, f"a VLAN link was refused in {where}: {_reason(exc)}"
        finally:
            if index is not None:
                _delete_if_present(ipr, index)
        return True, f"VLAN links (8021q) work in {where}"

    try:
        thread = NetlinkThread(netns, timeout, where)
    except HostNetworkError as exc:
        return False, f"cannot check VLAN support: {exc}"
    try:
        return thread.run(probe, f"cannot check VLAN support in {where}")
    except HostNetworkError as exc:
        return False, str(exc)
    finally:
        thread.close()
