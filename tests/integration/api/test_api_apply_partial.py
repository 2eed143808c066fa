"""Multi-document apply that cannot be written whole: nothing written when a check finds it
before the writes; otherwise the error says which document stopped it and what was written."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.config import Settings
from localcluster.zookeeper import ZooKeeperServer
from schemas import Resource, VirtualMachine
from tests.integration.api.api_helpers import assert_status, vm
from tests.integration.zkstore.bulk_helpers import between_read_and_write
from zkstore import ApplyOutcome, Store


class WriterBetween(Store):
    """A store through which another client changes an object just before this one writes
    it: the interleaving of two applies, or an apply and a `pvcctl edit`, made certain."""

    def __init__(self, hosts: str, root: str, other: Store) -> None:
        super().__init__(hosts, root, timeout=6.0)
        self.other = other
        self.change_before_writing: str | None = None

    def apply(self, resource: Any, *, likely_new: bool = False) -> tuple[Resource, ApplyOutcome]:
        if resource.name == self.change_before_writing:
            self.other.mutate_spec(VirtualMachine, resource.name, bump_vcpus)
        return super().apply(resource, likely_new=likely_new)


def bump_vcpus(obj: VirtualMachine) -> None:
    obj.spec.vcpus += 1


@pytest.fixture
def racing(zookeeper: ZooKeeperServer) -> Iterator[tuple[TestClient, WriterBetween]]:
    root = f"/apply-{uuid.uuid4().hex[:8]}"
    other = Store(zookeeper.hosts, root, timeout=6.0)
    other.start()
    store = WriterBetween(zookeeper.hosts, root, other)
    store.start()
    try:
        with TestClient(create_app(Settings(root=root), store)) as client:
            yield client, store
    finally:
        store.stop()
        other.stop()


def names(store: Store) -> list[str]:
    return [v.name for v in store.list(VirtualMachine)]


def pinned(store: Store, name: str, **spec: Any) -> dict[str, Any]:
    doc = vm(name, **spec)
    doc["metadata"]["resourceVersion"] = store.get(VirtualMachine, name).metadata.resource_version
    return doc


def test_a_stale_resource_version_is_found_before_anything_is_written(
    racing: tuple[TestClient, WriterBetween],
) -> None:
    client, store = racing
    client.post("/api/v1/apply", json=[vm("c")]).raise_for_status()
    stale = pinned(store, "c", vcpus=4)
    store.other.mutate_spec(VirtualMachine, "c", bump_vcpus)  # someone else wrote c since
    answer = client.post("/api/v1/apply", json=[vm("a"), vm("b"), stale, vm("d")])
    body = assert_status(answer, 409, "Conflict")
    assert "document 3 (VirtualMachine 'c')" in body["message"]
    assert "nothing was written" in body["message"]
    assert body["details"]["document"] == 3 and body["details"]["written"] == []
    assert names(store) == ["c"]
    assert store.get(VirtualMachine, "c").spec.vcpus == 2  # the other client's write, kept


def test_a_write_that_fails_mid_way_says_what_was_written_and_a_rerun_finishes(
    racing: tuple[TestClient, WriterBetween],
) -> None:
    client, store = racing
    client.post("/api/v1/apply", json=[vm("c"), vm("b")]).raise_for_status()
    docs = [vm("a"), vm("b", vcpus=3), pinned(store, "c", vcpus=4), vm("d")]
    store.change_before_writing = "c"
    answer = client.post("/api/v1/apply", json=docs)
    body = assert_status(answer, 409, "Conflict")
    assert body["message"].startswith("document 3 (VirtualMachine 'c') was not written: ")
    assert (
        "Written before it: VirtualMachine 'a' created, VirtualMachine 'b' configured"
        in (body["message"])
    )
    assert "not written: it and the 1 after it" in body["message"]
    details = body["details"]
    assert [(r["name"], r["outcome"]) for r in details["written"]] == [
        ("a", "created"),
        ("b", "configured"),
    ]
    assert details["notWritten"] == [
        {"kind": "VirtualMachine", "name": "c"},
        {"kind": "VirtualMachine", "name": "d"},
    ]
    # What the error says is what the cluster holds, and reads through the API agree.
    assert names(store) == ["a", "b", "c"]
    assert store.get(VirtualMachine, "b").spec.vcpus == 3
    assert store.get(VirtualMachine, "c").spec.vcpus == 2  # the other writer's, not ours
    assert client.get("/api/v1/vms/a").status_code == 200
    # Applying again (re-read c, as the message says) finishes it.
    store.change_before_writing = None
    docs[2] = pinned(store, "c", vcpus=4)
    again = client.post("/api/v1/apply", json=docs)
    assert again.status_code == 200, again.text
    outcomes = [(i["name"], i["outcome"]) for i in again.json()["items"]]
    assert outcomes == [
        ("a", "unchanged"),
        ("b", "unchanged"),
        ("c", "configured"),
        ("d", "created"),
    ]


def test_a_large_apply_is_written_in_bulk_and_a_failure_says_exactly_what_was_not(
    racing: tuple[TestClient, WriterBetween], monkeypatch: pytest.MonkeyPatch
) -> None:
    """64 documents or more are written in bulk, 50 at a time (zkstore/bulkwrite.py): a
    failure stops the apply after its group, and written/notWritten list exactly what the
    cluster holds."""
    client, store = racing
    client.post("/api/v1/apply", json=[vm("v020")]).raise_for_status()
    docs = [vm(f"v{i:03d}") for i in range(120)]
    docs[60] = vm("v060", vcpus=3)
    docs[20] = pinned(store, "v020", vcpus=4)  # in the first group (0..49)
    between_read_and_write(
        monkeypatch, "v020", lambda: store.other.mutate_spec(VirtualMachine, "v020", bump_vcpus)
    )
    body = assert_status(client.post("/api/v1/apply", json=docs), 409, "Conflict")
    assert body["message"].startswith("document 21 (VirtualMachine 'v020') was not written: ")
    assert "not written: it and the 70 after it" in body["message"]
    details = body["details"]
    assert details["document"] == 21
    written = [f"v{i:03d}" for i in range(50) if i != 20]
    assert [r["name"] for r in details["written"]] == written  # in document order
    assert {r["outcome"] for r in details["written"]} == {"created"}
    assert [n["name"] for n in details["notWritten"]] == ["v020"] + [
        f"v{i:03d}" for i in range(50, 120)
    ]
    assert names(store) == sorted([*written, "v020"])
    assert store.get(VirtualMachine, "v020").spec.vcpus == 2  # the other writer's, kept
    for r in details["written"]:
        assert (
            client.get(f"/api/v1/vms/{r['name']}").json()["metadata"]["resourceVersion"]
            == (r["resourceVersion"])
        )
    docs[20] = pinned(store, "v020", vcpus=4)
    again = client.post("/api/v1/apply", json=docs)
    assert again.status_code == 200, again.text
    outcomes = [i["outcome"] for i in again.json()["items"]]
    assert outcomes == ["unchanged"] * 20 + ["configured"] + ["unchanged"] * 29 + ["created"] * 70
    assert len(names(store)) == 120
    assert store.get(VirtualMachine, "v060").spec.vcpus == 3
