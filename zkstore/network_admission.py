"""Checks of a Network against the other networks (the API's writes, before anything is
written): what one Network's schema cannot know. Bad input raises InvalidResource (422,
naming the field)."""

from __future__ import annotations

import ipaddress

from schemas import FieldError, InvalidResource, Network, VirtualMachine, network_number
from zkstore.store import Store

Batch = dict[tuple[str, str], object]


def admit_network(
    store: Store, net: Network, batch: Batch, stored: list[Network] | None = None
) -> None:
    """Refuse a vni or vlan another network has (their bridges share one name space,
    vmbr<N>) and an IPv4 network that overlaps another's. ``stored``: every stored network,
    when the caller has read them (default: read now)."""
    listed = store.list(Network) if stored is None else stored
    others: dict[str, Network] = {n.name: n for n in listed}
    for (kind, name), obj in batch.items():
        if kind == Network.KIND and isinstance(obj, Network):
            others[name] = obj
    others.pop(net.name, None)
    errors: list[FieldError] = []
    number = network_number(net.spec)
    field = "vni" if net.spec.type == "managed" else "vlan"
    for other in sorted(others.values(), key=lambda n: n.name):
        if network_number(other.spec) == number:
            theirs = "vni" if other.spec.type == "managed" else "vlan"
            what = f"{field} {number}" if net.spec.vni or net.spec.vlan else "untagged (no vlan)"
            errors.append(
                FieldError(
                    ("spec", field),
                    f"{what} is taken: network {other.name!r} has {theirs} {number} "
                    f"(both would be bridge vmbr{number})",
                )
            )
            break
    if net.spec.ipv4 is not None:
        mine = ipaddress.IPv4Network(net.spec.ipv4.network)
        for other in sorted(others.values(), key=lambda n: n.name):
            if other.spec.ipv4 is None:
                continue
            theirs_net = ipaddress.IPv4Network(other.spec.ipv4.network)
            if mine.overlaps(theirs_net):
                errors.append(
                    FieldError(
                        ("spec", "ipv4", "network"),
                        f"{mine} overlaps {theirs_net} of network {other.name!r}",
                    )
                )
                break
    if errors:
        raise InvalidResource(errors)


def network_users(store: Store, network: str) -> list[str]:
    """VMs with a NIC on ``network``."""
    return sorted(
        vm.name
        for vm in store.list(VirtualMachine)
        if any(n.network == network for n in vm.spec.nics)
    )


def network_in_use(store: Store, network: str) -> str | None:
    """Why ``network`` may not be deleted now, or None."""
    users = network_users(store, network)
    if not users:
        return None
    more = " …" if len(users) > 5 else ""
    return (
        f"network {network!r} is in use by {len(users)} VM(s) ({', '.join(users[:5])}{more}): "
        "remove their NICs on it, or delete them, first"
    )
