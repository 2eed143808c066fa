"""Network: a bridged VLAN on each node's bridge device, or a managed VXLAN with DHCP."""

from __future__ import annotations

import ipaddress
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from schemas.meta import DnsLabel, DomainName, Model, ObjectMeta, Status
from schemas.resource import Resource
from schemas.vm import Nic


class DhcpRange(Model):
    start: str
    end: str


class IPv4Config(Model):
    network: str
    gateway: str
    dhcp: DhcpRange | None = None

    @model_validator(mode="after")
    def _addresses_in_network(self) -> IPv4Config:
        try:
            net = ipaddress.IPv4Network(self.network, strict=True)
        except ValueError as exc:
            raise ValueError(f"invalid ipv4 network {self.network!r}: {exc}") from None
        addrs = {"gateway": self.gateway}
        if self.dhcp:
            addrs |= {"dhcp.start": self.dhcp.start, "dhcp.end": self.dhcp.end}
        for field, text in addrs.items():
            try:
                addr = ipaddress.IPv4Address(text)
            except ValueError:
                raise ValueError(f"{field} {text!r} is not an IPv4 address") from None
            if addr not in net:
                raise ValueError(f"{field} {text} is outside {net}")
            if net.prefixlen < 31 and addr in (net.network_address, net.broadcast_address):
                what = "network" if addr == net.network_address else "broadcast"
                raise ValueError(f"{field} {text} is the {what} address of {net}")
        if self.dhcp and ipaddress.IPv4Address(self.dhcp.start) > ipaddress.IPv4Address(
            self.dhcp.end
        ):
            raise ValueError("dhcp.start must not be above dhcp.end")
        if self.dhcp and net.prefixlen > 30:
            raise ValueError(f"{net} leaves no room for DHCP clients: give a /30 or wider")
        return self


class Reservation(Model):
    mac: str
    ip: str
    hostname: DnsLabel | None = None

    @model_validator(mode="after")
    def _valid(self) -> Reservation:
        Nic(network="x", mac=self.mac)  # one MAC rule for NICs and reservations
        ipaddress.IPv4Address(self.ip)
        return self


class NetworkSpec(Model):
    type: Literal["bridged", "managed"]
    vlan: int | None = Field(default=None, ge=1, le=4094)
    vni: int | None = Field(default=None, ge=1, le=16777215)
    mtu: int | None = Field(default=None, ge=576, le=9000)
    domain: DomainName | None = None
    """The DNS domain the network's DHCP server hands out (and serves, with dnsPort)."""
    ipv4: IPv4Config | None = None
    reservations: list[Reservation] = Field(default_factory=list)
    """Fixed addresses by MAC, handed out by the network's DHCP server (managed only)."""

    @field_validator("reservations")
    @classmethod
    def _reservations_fit(
        cls, reservations: list[Reservation], info: ValidationInfo
    ) -> list[Reservation]:
        ipv4 = info.data.get("ipv4")
        net = ipaddress.IPv4Network(ipv4.network) if isinstance(ipv4, IPv4Config) else None
        if reservations and net is None and info.data.get("type") == "managed":
            raise ValueError("reservations need ipv4 (the network they are handed out in)")
        if reservations and net is not None and net.prefixlen > 30:
            raise ValueError(f"{net} leaves no room for DHCP clients: give a /30 or wider")
        macs: dict[str, int] = {}
        ips: dict[str, int] = {}
        for i, r in enumerate(reservations):
            mac, addr = r.mac.lower(), ipaddress.IPv4Address(r.ip)
            if net is not None and addr not in net:
                raise ValueError(f"reservations[{i}].ip {r.ip} is outside {net}")
            if net is not None and addr in (net.network_address, net.broadcast_address):
                raise ValueError(f"reservations[{i}].ip {r.ip} is not a host address of {net}")
            if isinstance(ipv4, IPv4Config) and r.ip == ipv4.gateway:
                raise ValueError(f"reservations[{i}].ip {r.ip} is the gateway's address")
            if mac in macs:
                raise ValueError(
                    f"reservations[{i}].mac {r.mac} is reserved twice (also [{macs[mac]}])"
                )
            if str(addr) in ips:
                raise ValueError(
                    f"reservations[{i}].ip {r.ip} is reserved twice (also [{ips[str(addr)]}])"
                )
            macs[mac], ips[str(addr)] = i, i
        return reservations

    @model_validator(mode="after")
    def _type_fields(self) -> NetworkSpec:
        if self.type == "managed":
            if self.vni is None:
                raise ValueError("a managed network needs 'vni'")
            if self.vlan is not None:
                raise ValueError("'vlan' is for bridged networks; a managed network uses 'vni'")
        else:
            extra = [f for f in ("vni", "ipv4", "domain") if getattr(self, f) is not None]
            if extra or self.reservations:
                raise ValueError(
                    f"a bridged network takes no {', '.join(extra or ['reservations'])}: "
                    "use type managed for VXLAN, addressing and DHCP"
                )
        return self


class DhcpLease(Model):
    """An address the network's DHCP server handed out."""

    mac: str
    ip: str
    hostname: str | None = None
    expires: str | None = None
    """RFC 3339; None: never."""


class NetworkStatus(Status):
    ready_nodes: list[str] = Field(default_factory=list)
    """Nodes whose bridge for this network is up (and, for managed, its VXLAN port): VMs
    with a NIC on it are placed only there."""
    gateway_node: str | None = None
    """Where the gateway address and the DHCP server run: the primary coordinator."""
    leases: list[DhcpLease] = Field(default_factory=list)


def bridge_name(spec: NetworkSpec) -> str:
    """The per-network bridge on every node: vmbr<vni> or vmbr<vlan> (one number space:
    a vni and a vlan may not share a number); vmbr0 for an untagged bridged network."""
    return f"vmbr{spec.vni if spec.type == 'managed' else (spec.vlan or 0)}"


def network_number(spec: NetworkSpec) -> int:
    """The number that names the network's bridge (see ``bridge_name``)."""
    return int(bridge_name(spec).removeprefix("vmbr"))


class Network(Resource):
    KIND = "Network"
    PLURAL = "networks"
    SHORT_NAMES = ("net", "nets", "network", "networks")

    kind: Literal["Network"] = "Network"
    metadata: ObjectMeta
    spec: NetworkSpec
    status: NetworkStatus | None = None
