"""Network: a bridged VLAN on each node's bridge device, or a managed VXLAN with DHCP."""

from __future__ import annotations

import ipaddress
from typing import Literal

from pydantic import Field, model_validator

from schemas.meta import DnsLabel, Model, ObjectMeta, Status
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
        if self.dhcp and ipaddress.IPv4Address(self.dhcp.start) > ipaddress.IPv4Address(
            self.dhcp.end
        ):
            raise ValueError("dhcp.start must not be above dhcp.end")
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
    domain: str | None = None
    ipv4: IPv4Config | None = None
    reservations: list[Reservation] = Field(default_factory=list)

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


class NetworkStatus(Status):
    ready_nodes: list[str] = Field(default_factory=list)
    gateway_node: str | None = None
    leases: list[Reservation] = Field(default_factory=list)


class Network(Resource):
    KIND = "Network"
    PLURAL = "networks"
    SHORT_NAMES = ("net", "nets", "network", "networks")

    kind: Literal["Network"] = "Network"
    metadata: ObjectMeta
    spec: NetworkSpec
    status: NetworkStatus | None = None
