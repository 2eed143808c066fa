"""An apply or a restore of many documents through pvcapid (written in bulk from
PARALLEL_FROM documents, zkstore/bulkwrite.py): the answer lists every document in order
with what is stored, reads right after see the writes, each change is an event."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.config import Settings
from api.routes.apply import PARALLEL_FROM
from schemas import VirtualMachine
from tests.integration.api.api_helpers import vm
from zkstore import Store


@pytest.fixture
def client(store: Store) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(root=store.root), store)) as test_client:
        yield test_client


def items(response: Any) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.text
    return list(response.json()["items"])


def events_of(client: TestClient, name: str) -> set[tuple[str, str]]:
    """The object's events but the audit log's (reason Write)."""
    found = client.get("/api/v1/events", params={"kind": "vm", "name": name}).json()["items"]
    return {(e["reason"], e["message"]) for e in found if e["reason"] != "Write"}


def test_an_apply_of_200_vms_creates_them_all_in_document_order(
    client: TestClient, store: Store
) -> None:
    names = [f"web-{i:03d}" for i in reversed(range(200))]  # not in name order
    answer = items(client.post("/api/v1/apply", json=[vm(n, vcpus=2) for n in names]))
    assert [i["name"] for i in answer] == names
    assert {(i["outcome"], i["generation"]) for i in answer} == {("created", 1)}
    # What the answer says is what is stored, and the API's reads show it at once.
    for item in answer:
        got = client.get(f"/api/v1/vms/{item['name']}").json()
        assert got["metadata"]["resourceVersion"] == item["resourceVersion"]
        assert got["spec"]["vcpus"] == 2
    assert len(store.names(VirtualMachine)) == 200
    assert events_of(client, "web-007") == {("Created", "created by apply")}


def test_created_configured_and_unchanged_documents_in_one_apply(
    client: TestClient, store: Store
) -> None:
    items(client.post("/api/v1/apply", json=[vm(f"web-{i:03d}") for i in range(40)]))
    docs = [vm(f"web-{i:03d}", vcpus=3 if i % 4 == 0 else 1) for i in range(PARALLEL_FROM * 2)]
    answer = items(client.post("/api/v1/apply", json=docs))
    expected = [
        "created" if i >= 40 else "configured" if i % 4 == 0 else "unchanged"
        for i in range(len(docs))
    ]
    assert [i["outcome"] for i in answer] == expected
    for i, item in enumerate(answer):
        stored = store.get(VirtualMachine, item["name"])
        assert item["resourceVersion"] == stored.metadata.resource_version
        assert item["generation"] == stored.metadata.generation
        assert stored.spec.vcpus == (3 if i % 4 == 0 else 1)
    created = ("Created", "created by apply")
    assert events_of(client, "web-004") == {created, ("Configured", "configured by apply")}
    assert events_of(client, "web-005") == {created}  # unchanged: no event


def test_a_restore_of_many_objects_is_written_in_bulk_too(client: TestClient, store: Store) -> None:
    docs = [vm(f"db-{i:03d}") for i in range(PARALLEL_FROM + 6)]
    answer = client.post("/api/v1/restore", json=docs)
    assert {i["outcome"] for i in items(answer)} == {"created"}
    assert len(store.names(VirtualMachine)) == len(docs)
    assert events_of(client, "db-003") == {("Restored", "created by restore")}
