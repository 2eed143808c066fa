"""Networks through the API: what one Network's schema cannot know is checked against the
other networks before anything is written (422 naming the field), and a network in use is
not deleted (409)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.config import Settings
from tests.integration.api.api_helpers import assert_status, vm
from zkstore import Store


@pytest.fixture
def client(store: Store) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(root=store.root), store)) as c:
        yield c


def net(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "pvc/v1", "kind": "Network", "metadata": {"name": name}, "spec": spec}


def managed(name: str, vni: int, subnet: str = "10.1.0") -> dict[str, Any]:
    return net(
        name,
        type="managed",
        vni=vni,
        ipv4={
            "network": f"{subnet}.0/24",
            "gateway": f"{subnet}.1",
            "dhcp": {"start": f"{subnet}.100", "end": f"{subnet}.200"},
        },
    )


def names(client: TestClient) -> list[str]:
    return sorted(i["metadata"]["name"] for i in client.get("/api/v1/networks").json()["items"])


def test_a_vni_or_vlan_another_network_has_is_422_and_writes_nothing(client: TestClient) -> None:
    assert client.post("/api/v1/networks", json=managed("a", 100)).status_code == 201
    body = assert_status(
        client.post("/api/v1/networks", json=managed("b", 100, "10.2.0")), 422, "Invalid"
    )
    assert body["details"]["causes"][0]["field"] == "spec.vni"
    assert "network 'a' has vni 100" in body["message"]
    # A vlan and a vni share one number space: both would be bridge vmbr100.
    body = assert_status(
        client.post("/api/v1/networks", json=net("c", type="bridged", vlan=100)), 422, "Invalid"
    )
    assert body["details"]["causes"][0]["field"] == "spec.vlan"
    assert "vmbr100" in body["message"]
    assert names(client) == ["a"]


def test_an_overlapping_subnet_is_422_also_within_one_apply(client: TestClient) -> None:
    assert client.post("/api/v1/networks", json=managed("a", 100, "10.1.0")).status_code == 201
    wide = managed("b", 200, "10.1.0")
    wide["spec"]["ipv4"] = {"network": "10.0.0.0/8", "gateway": "10.9.9.1"}
    body = assert_status(client.post("/api/v1/networks", json=wide), 422, "Invalid")
    assert body["details"]["causes"][0]["field"] == "spec.ipv4.network"
    assert "overlaps 10.1.0.0/24 of network 'a'" in body["message"]
    # Two new networks in one apply that clash with each other: nothing of it is written.
    response = client.post(
        "/api/v1/apply", json=[managed("c", 300, "10.3.0"), managed("d", 300, "10.4.0")]
    )
    assert_status(response, 422, "Invalid")
    assert names(client) == ["a"]


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        (
            {"ipv4": {"network": "10.1.0.0/24", "gateway": "10.1.0.0"}},
            "spec.ipv4",
            "network address",
        ),
        (
            {"reservations": [{"mac": "52:54:00:00:00:01", "ip": "10.9.0.5"}]},
            "spec.reservations",
            "outside 10.1.0.0/24",
        ),
        (
            {
                "reservations": [
                    {"mac": "52:54:00:00:00:01", "ip": "10.1.0.5"},
                    {"mac": "52:54:00:00:00:01", "ip": "10.1.0.6"},
                ]
            },
            "spec.reservations",
            "reserved twice",
        ),
        (
            {
                "reservations": [
                    {"mac": "52:54:00:00:00:01", "ip": "10.1.0.5"},
                    {"mac": "52:54:00:00:00:02", "ip": "10.1.0.5"},
                ]
            },
            "spec.reservations",
            "reserved twice",
        ),
        (
            {
                "ipv4": {
                    "network": "10.1.0.0/24",
                    "gateway": "10.1.0.1",
                    "dhcp": {"start": "10.1.0.9", "end": "10.2.0.9"},
                }
            },
            "spec.ipv4",
            "outside 10.1.0.0/24",
        ),
    ],
)
def test_bad_addressing_is_422_with_the_field(
    client: TestClient, change: dict[str, Any], field: str, words: str
) -> None:
    body = managed("a", 100)
    body["spec"].update(change)
    problem = assert_status(client.post("/api/v1/networks", json=body), 422, "Invalid")
    assert problem["details"]["causes"][0]["field"] == field
    assert words in problem["message"]
    assert names(client) == []


def test_a_network_in_use_is_not_deleted(client: TestClient) -> None:
    assert client.post("/api/v1/networks", json=managed("lan", 100)).status_code == 201
    assert client.post("/api/v1/vms", json=vm("web1", nics=[{"network": "lan"}])).status_code == 201
    body = assert_status(client.delete("/api/v1/networks/lan"), 409, "Conflict")
    assert "web1" in body["message"]
    assert names(client) == ["lan"]
    assert client.delete("/api/v1/vms/web1").status_code in (200, 202)
    assert client.delete("/api/v1/networks/lan").status_code == 200
