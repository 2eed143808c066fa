"""pvcapid and spec.fence of the fence-agents agent: an agent installed here is taken, any
other name is a 422 naming spec.fence.fenceAgent, and nothing is written."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.config import Settings
from zkstore import Store


@pytest.fixture
def client(store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    agent = tmp_path / "fence_installed"
    agent.write_text("#!/bin/sh\nexit 1\n")
    agent.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    with TestClient(create_app(Settings(root=store.root), store)) as test_client:
        yield test_client


def node(name: str, fence_agent: str, **fence: Any) -> dict[str, Any]:
    return {
        "apiVersion": "pvc/v1",
        "kind": "Node",
        "metadata": {"name": name},
        "spec": {
            "fence": {
                "agent": "fence-agents",
                "fenceAgent": fence_agent,
                "address": "10.0.0.9",
                "user": "admin",
                "password": "s3cret",
                **fence,
            }
        },
    }


def refused(response: Any, field: str, says: str) -> None:
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["details"]["field"] == field and says in body["message"], body
    assert "s3cret" not in response.text


def test_an_installed_agent_is_taken_and_others_are_422(client: TestClient) -> None:
    created = client.post(
        "/api/v1/nodes", json=node("hv1", "fence_installed", options={"lanplus": "1"})
    )
    assert created.status_code == 201, created.text
    fence = client.get("/api/v1/nodes/hv1").json()["spec"]["fence"]
    assert fence["fenceAgent"] == "fence_installed" and fence["options"] == {"lanplus": "1"}
    assert fence["password"] == "********"

    refused(
        client.put("/api/v1/nodes/hv1", json=node("hv1", "fence_not_here")),
        "spec.fence.fenceAgent",
        "'fence_not_here' is not installed here",
    )
    refused(
        client.post("/api/v1/nodes", json=node("hv2", "ipmitool")),
        "spec.fence.fenceAgent",
        "fence_<lowercase letters, digits, _>",
    )
    refused(
        client.post("/api/v1/nodes", json=node("hv2", "fence_installed", options={"ip": "x"})),
        "spec.fence.options",
        "PVC writes",
    )
    # Nothing changed, nothing was created.
    assert client.get("/api/v1/nodes/hv1").json()["spec"]["fence"]["fenceAgent"] == (
        "fence_installed"
    )
    assert client.get("/api/v1/nodes/hv2").status_code == 404
