"""Review of networks (issue 13): input the API takes (201) that the primary's DHCP server
cannot use, each 422 with the field now."""

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


@pytest.mark.parametrize("domain", ["not a domain!", "-bad-.example", "lan.example\n"])
def test_a_domain_that_is_no_domain_name_is_422(client: TestClient, domain: str) -> None:
    assert_refused(client, {"domain": domain}, "spec.domain")


def test_dhcp_on_a_network_with_no_room_for_clients_is_422(client: TestClient) -> None:
    ipv4 = {
        "network": "10.1.0.0/31",
        "gateway": "10.1.0.0",
        "dhcp": {"start": "10.1.0.1", "end": "10.1.0.1"},
    }
    assert_refused(client, {"ipv4": ipv4}, "spec.ipv4")


def test_reservations_without_ipv4_are_422(client: TestClient) -> None:
    change = {"ipv4": None, "reservations": [{"mac": "52:54:00:00:00:01", "ip": "10.1.0.5"}]}
    assert_refused(client, change, "spec.reservations")
