"""pvcapid over a real ZooKeeper: status codes, one error shape, nothing written on bad input."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.config import Settings
from zkstore import Store


@pytest.fixture
def client(store: Store) -> Iterator[TestClient]:
    settings = Settings(root=store.root, max_body_bytes=4096)
    with TestClient(create_app(settings, store)) as test_client:
        yield test_client


def vm(name: str = "web1", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "pvc/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": name, "labels": {"app": "web"}},
        "spec": {"memory": "256Mi", **spec},
    }


def assert_status(response: Any, code: int, reason: str) -> dict[str, Any]:
    assert response.status_code == code, response.text
    body = dict(response.json())
    assert body["kind"] == "Status" and body["code"] == code and body["reason"] == reason
    assert body["message"]
    return body


def test_healthz(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok", "zookeeper": "connected"}


def test_create_get_list_delete(client: TestClient) -> None:
    created = client.post("/api/v1/vms", json=vm())
    assert created.status_code == 201
    assert created.json()["metadata"]["generation"] == 1
    assert client.get("/api/v1/vms/web1").json()["spec"]["memory"] == "256Mi"
    assert [i["metadata"]["name"] for i in client.get("/api/v1/vms").json()["items"]] == ["web1"]
    assert client.delete("/api/v1/vms/web1").status_code == 200
    assert_status(client.get("/api/v1/vms/web1"), 404, "NotFound")


def test_create_twice_is_409_already_exists(client: TestClient) -> None:
    client.post("/api/v1/vms", json=vm())
    assert_status(client.post("/api/v1/vms", json=vm()), 409, "AlreadyExists")


def test_replace_with_stale_resource_version_is_409(client: TestClient) -> None:
    first = client.post("/api/v1/vms", json=vm()).json()
    first.pop("status", None)
    first["spec"]["vcpus"] = 2
    assert client.put("/api/v1/vms/web1", json=first).status_code == 200
    first["spec"]["vcpus"] = 4
    assert_status(client.put("/api/v1/vms/web1", json=first), 409, "Conflict")
    assert client.get("/api/v1/vms/web1").json()["spec"]["vcpus"] == 2


def test_replace_with_a_different_name_is_422(client: TestClient) -> None:
    client.post("/api/v1/vms", json=vm())
    body = assert_status(client.put("/api/v1/vms/web1", json=vm("other")), 422, "Invalid")
    assert body["details"]["field"] == "metadata.name"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (vm(memory="-1Gi"), "spec.memory"),
        (vm(cpus=2), "spec.cpus"),
        (vm("Bad_Name"), "metadata.name"),
        ({**vm(), "kind": "Node"}, "kind"),
    ],
)
def test_invalid_objects_are_422_with_the_field_and_write_nothing(
    client: TestClient, body: dict[str, Any], field: str
) -> None:
    response = assert_status(client.post("/api/v1/vms", json=body), 422, "Invalid")
    assert response["details"]["field"] == field
    assert client.get("/api/v1/vms").json()["items"] == []


@pytest.mark.parametrize("raw", [b"{not json", b"", b"\xff\xfe"])
def test_unparseable_bodies_are_400(client: TestClient, raw: bytes) -> None:
    response = client.post("/api/v1/vms", content=raw, headers={"content-type": "application/json"})
    assert_status(response, 400, "BadRequest")


def test_a_body_that_is_not_an_object_is_422(client: TestClient) -> None:
    assert_status(client.post("/api/v1/vms", json=[1, 2]), 400, "BadRequest")
    assert_status(client.post("/api/v1/vms", json="text"), 422, "Invalid")


def test_an_oversized_body_is_413(client: TestClient) -> None:
    big = vm()
    big["metadata"]["annotations"] = {"note": "x" * 5000}
    assert_status(client.post("/api/v1/vms", json=big), 413, "RequestEntityTooLarge")


def test_apply_reports_created_unchanged_configured(client: TestClient) -> None:
    def outcomes(body: list[dict[str, Any]]) -> list[str]:
        return [i["outcome"] for i in client.post("/api/v1/apply", json=body).json()["items"]]

    assert outcomes([vm("a"), vm("b")]) == ["created", "created"]
    assert outcomes([vm("a"), vm("b")]) == ["unchanged", "unchanged"]
    assert outcomes([vm("a", vcpus=2), vm("b")]) == ["configured", "unchanged"]
    assert client.get("/api/v1/vms/a").json()["metadata"]["generation"] == 2


def test_apply_takes_multi_document_yaml(client: TestClient) -> None:
    text = "\n---\n".join(
        f"apiVersion: pvc/v1\nkind: VirtualMachine\nmetadata: {{name: y{i}}}\nspec: {{memory: 1Gi}}"
        for i in range(3)
    )
    response = client.post(
        "/api/v1/apply", content=text, headers={"content-type": "application/yaml"}
    )
    assert [i["name"] for i in response.json()["items"]] == ["y0", "y1", "y2"]


def test_apply_with_one_invalid_document_writes_nothing(client: TestClient) -> None:
    body = assert_status(
        client.post("/api/v1/apply", json=[vm("ok"), vm("bad", memory="lots")]), 422, "Invalid"
    )
    assert body["message"].startswith("document 2: spec.memory")
    assert client.get("/api/v1/vms").json()["items"] == []


def test_label_selector_filters_and_a_bad_one_is_400(client: TestClient) -> None:
    client.post("/api/v1/apply", json=[vm("w"), {**vm("d"), "metadata": {"name": "d"}}])
    names = [
        i["metadata"]["name"]
        for i in client.get("/api/v1/vms?labelSelector=app=web").json()["items"]
    ]
    assert names == ["w"]
    assert_status(client.get("/api/v1/vms?labelSelector==x"), 400, "BadRequest")


def test_fence_password_never_appears_in_responses(client: TestClient) -> None:
    node = {
        "apiVersion": "pvc/v1",
        "kind": "Node",
        "metadata": {"name": "hv1"},
        "spec": {"fence": {"agent": "ipmi", "address": "127.0.0.1", "password": "s3cret"}},
    }
    for response in (
        client.post("/api/v1/nodes", json=node),
        client.get("/api/v1/nodes/hv1"),
        client.get("/api/v1/nodes"),
    ):
        assert "s3cret" not in response.text
    assert client.get("/api/v1/nodes/hv1").json()["spec"]["fence"]["password"] == "********"


def test_status_of_a_missing_object_is_404(client: TestClient) -> None:
    assert_status(client.get("/api/v1/vms/none/status"), 404, "NotFound")


def test_openapi_lists_every_kind(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for plural in ("vms", "nodes", "networks", "clusters"):
        assert f"/api/v1/{plural}/{{name}}" in paths


def test_applying_a_read_back_node_keeps_its_password(client: TestClient, store: Store) -> None:
    from schemas import Node

    node = {
        "apiVersion": "pvc/v1",
        "kind": "Node",
        "metadata": {"name": "hv2"},
        "spec": {"fence": {"agent": "ipmi", "address": "127.0.0.1", "password": "s3cret"}},
    }
    client.post("/api/v1/nodes", json=node)
    read_back = client.get("/api/v1/nodes/hv2").json()
    read_back["spec"]["coordinator"] = True
    read_back.pop("status", None)
    assert (
        client.post("/api/v1/apply", json=[read_back]).json()["items"][0]["outcome"] == "configured"
    )
    stored = store.reveal(store.get(Node, "hv2"))
    assert stored.spec.coordinator
    assert stored.spec.fence.password is not None
    assert stored.spec.fence.password.get_secret_value() == "s3cret"


@pytest.mark.parametrize("route", ["/api/v1/nodes", "/api/v1/apply"])
def test_a_new_node_whose_password_is_the_mask_is_refused(
    client: TestClient, store: Store, route: str
) -> None:
    """`get -o yaml`, `delete`, `apply`: the read-back mask must not become the password."""
    node = {
        "apiVersion": "pvc/v1",
        "kind": "Node",
        "metadata": {"name": "hv3"},
        "spec": {"fence": {"agent": "ipmi", "address": "127.0.0.1", "password": "********"}},
    }
    response = client.post(route, json=[node] if route.endswith("apply") else node)
    assert response.status_code == 422, response.text
    assert "password" in response.text and "mask" in response.text
    assert client.get("/api/v1/nodes/hv3").status_code == 404


def test_a_list_as_table_rows_is_pvcctl_gets_table(client: TestClient) -> None:
    client.post("/api/v1/apply", json=[vm("w", vcpus=2), {**vm("d"), "metadata": {"name": "d"}}])
    table = client.get("/api/v1/vms?view=table").json()
    assert table["kind"] == "Table"
    assert table["columns"] == ["NAME", "PHASE", "NODE", "VCPUS", "MEMORY", "READY", "AGE"]
    assert [row[:6] for row in table["rows"]] == [
        ["d", "Pending", "-", "1", "256Mi", "Unknown"],
        ["w", "Pending", "-", "2", "256Mi", "Unknown"],
    ]
    listed = client.get("/api/v1/vms").json()
    assert table["metadata"]["resourceVersion"] == listed["metadata"]["resourceVersion"]
    wide = client.get("/api/v1/vms?view=wide&labelSelector=app=web").json()
    assert wide["columns"][-4:] == ["RUNSTRATEGY", "ALLOWED-NODES", "LAST-NODE", "REASON"]
    assert [row[0] for row in wide["rows"]] == ["w"]
    assert client.get("/api/v1/nodes?view=table").json()["rows"] == []


def test_a_view_that_is_not_a_table_is_refused(client: TestClient) -> None:
    assert client.get("/api/v1/vms?view=json").status_code == 422
    assert_status(client.get("/api/v1/vms?view=table&watch=true"), 400, "BadRequest")
