"""Review of networks (issue 13): input the API takes (201) that the primary's DHCP server
cannot use, each a strict xfail naming the bug until it is 422 with the field."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.config import Settings
from tests.integration.api.api_helpers import assert_status
from tests.integration.api.test_api_networks import managed, names
from zkstore import Store


@pytest.fixture
def client(store: Store) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(root=store.root), store)) as c:
        yield c


def assert_refused(client: TestClient, change: dict[str, Any], field: str) -> None:
    body = managed("a", 100)
    body["spec"].update(change)
    problem = assert_status(client.post("/api/v1/networks", json=body), 422, "Invalid")
    assert problem["details"]["causes"][0]["field"] == field
    assert names(client) == []


@pytest.mark.xfail(
    reason="schemas/network.py NetworkSpec.domain is a bare str: any text is stored (201); "
    "the primary's DnsmasqConfig then raises ValueError in controllers/gateways.py _hold "
    "(not caught there: no GatewayReady reason, DHCP never (re)starts) or, for a trailing "
    "newline, renders a broken dnsmasq config",
    strict=True,
)
@pytest.mark.parametrize("domain", ["not a domain!", "-bad-.example", "lan.example\n"])
def test_a_domain_that_is_no_domain_name_is_422(client: TestClient, domain: str) -> None:
    assert_refused(client, {"domain": domain}, "spec.domain")


@pytest.mark.xfail(
    reason="schemas/network.py IPv4Config admits dhcp on a /31 (or /32); hypervisor/dnsmasq.py "
    "DnsmasqConfig refuses any prefix over /30 with ValueError, raised uncaught by "
    "controllers/gateways.py _hold on the primary: stored, never served, status says nothing",
    strict=True,
)
def test_dhcp_on_a_network_with_no_room_for_clients_is_422(client: TestClient) -> None:
    ipv4 = {
        "network": "10.1.0.0/31",
        "gateway": "10.1.0.0",
        "dhcp": {"start": "10.1.0.1", "end": "10.1.0.1"},
    }
    assert_refused(client, {"ipv4": ipv4}, "spec.ipv4")


@pytest.mark.xfail(
    reason="schemas/network.py NetworkSpec admits reservations on a managed network without "
    "ipv4 (nothing to check them against); controllers/gateways.py _dhcp_config then runs no "
    "DHCP server at all, so the reservations are silently never served",
    strict=True,
)
def test_reservations_without_ipv4_are_422(client: TestClient) -> None:
    change = {"ipv4": None, "reservations": [{"mac": "52:54:00:00:00:01", "ip": "10.1.0.5"}]}
    assert_refused(client, change, "spec.reservations")
