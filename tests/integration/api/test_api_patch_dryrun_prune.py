"""Merge-patch, server-side dry run, and apply with prune."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.config import Settings
from tests.integration.api.api_helpers import assert_status, node, vm
from zkstore import Store

MERGE = {"content-type": "application/merge-patch+json"}


@pytest.fixture
def client(store: Store) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(root=store.root), store)) as test_client:
        yield test_client


def patch(client: TestClient, path: str, body: Any, **params: Any) -> Any:
    import json

    return client.patch(path, content=json.dumps(body), headers=MERGE, params=params)


def test_merge_patch_merges_and_null_deletes(client: TestClient) -> None:
    client.post("/api/v1/vms", json=vm(labels={"app": "web", "tier": "front"}))
    response = patch(
        client,
        "/api/v1/vms/web1",
        {"metadata": {"labels": {"tier": None, "env": "prod"}}, "spec": {"vcpus": 3}},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["metadata"]["labels"] == {"app": "web", "env": "prod"}
    assert body["spec"]["vcpus"] == 3 and body["spec"]["memory"] == "256Mi"
    assert body["metadata"]["generation"] == 2


def test_merge_patch_with_stale_resource_version_is_409(client: TestClient) -> None:
    created = client.post("/api/v1/vms", json=vm()).json()
    rv = created["metadata"]["resourceVersion"]
    assert patch(client, "/api/v1/vms/web1", {"spec": {"vcpus": 2}}).status_code == 200
    stale = {"metadata": {"resourceVersion": rv}, "spec": {"vcpus": 4}}
    assert_status(patch(client, "/api/v1/vms/web1", stale), 409, "Conflict")
    assert client.get("/api/v1/vms/web1").json()["spec"]["vcpus"] == 2


def test_merge_patch_errors(client: TestClient) -> None:
    client.post("/api/v1/vms", json=vm())
    assert_status(
        client.patch("/api/v1/vms/web1", json={"spec": {"vcpus": 2}}), 415, "UnsupportedMediaType"
    )
    body = assert_status(patch(client, "/api/v1/vms/web1", {"spec": {"vcpus": 0}}), 422, "Invalid")
    assert body["details"]["field"] == "spec.vcpus"
    assert_status(patch(client, "/api/v1/vms/web1", {"metadata": {"name": "x"}}), 422, "Invalid")
    assert_status(patch(client, "/api/v1/vms/web1", [1]), 400, "BadRequest")
    assert_status(patch(client, "/api/v1/vms/nope", {"spec": {}}), 404, "NotFound")


def test_merge_patch_keeps_a_masked_password(client: TestClient, store: Store) -> None:
    from schemas import Node

    client.post(
        "/api/v1/nodes",
        json=node("hv1", fence={"agent": "ipmi", "address": "10.0.0.1", "password": "s3cret"}),
    )
    response = patch(client, "/api/v1/nodes/hv1", {"spec": {"coordinator": True}})
    assert response.status_code == 200 and "s3cret" not in response.text
    stored = store.reveal(store.get(Node, "hv1")).spec.fence.password
    assert stored is not None and stored.get_secret_value() == "s3cret"


def test_dry_run_writes_nothing(client: TestClient) -> None:
    created = client.post("/api/v1/vms", json=vm("dry"), params={"dryRun": "true"})
    assert created.status_code == 201 and created.json()["metadata"]["name"] == "dry"
    assert_status(client.get("/api/v1/vms/dry"), 404, "NotFound")
    real = client.post("/api/v1/vms", json=vm()).json()
    rv = real["metadata"]["resourceVersion"]
    changed = vm(vcpus=4)
    replaced = client.put("/api/v1/vms/web1", json=changed, params={"dryRun": "true"})
    assert replaced.json()["spec"]["vcpus"] == 4 and replaced.json()["metadata"]["generation"] == 2
    patched = patch(client, "/api/v1/vms/web1", {"spec": {"vcpus": 8}}, dryRun="true")
    assert patched.json()["spec"]["vcpus"] == 8
    assert client.delete("/api/v1/vms/web1", params={"dryRun": "true"}).status_code == 200
    after = client.get("/api/v1/vms/web1").json()
    assert after["metadata"]["resourceVersion"] == rv and after["spec"]["vcpus"] == 1
    result = client.post(
        "/api/v1/apply", json=[vm(vcpus=2), vm("new")], params={"dryRun": "true"}
    ).json()
    assert result["dryRun"] is True
    assert [(i["name"], i["outcome"]) for i in result["items"]] == [
        ("web1", "configured"),
        ("new", "created"),
    ]
    assert result["items"][0]["before"]["spec"]["vcpus"] == 1
    assert result["items"][0]["after"]["spec"]["vcpus"] == 2
    assert [i["metadata"]["name"] for i in client.get("/api/v1/vms").json()["items"]] == ["web1"]
    # A dry-run create of an existing object is the same 409 the real one would be.
    assert_status(
        client.post("/api/v1/vms", json=vm(), params={"dryRun": "true"}), 409, "AlreadyExists"
    )


def test_apply_prune_deletes_only_labelled_objects_missing_from_the_set(
    client: TestClient,
) -> None:
    owned = {"app": "shop"}
    client.post(
        "/api/v1/apply",
        json=[vm("a", labels=owned), vm("b", labels=owned), vm("other", labels={"app": "x"})],
    )
    params = {"prune": "true", "labelSelector": "app=shop"}
    dry = client.post(
        "/api/v1/apply", json=[vm("a", labels=owned)], params={**params, "dryRun": "true"}
    )
    assert [(i["name"], i["outcome"]) for i in dry.json()["items"]] == [
        ("a", "unchanged"),
        ("b", "pruned"),
    ]
    assert client.get("/api/v1/vms/b").status_code == 200
    result = client.post("/api/v1/apply", json=[vm("a", labels=owned)], params=params)
    assert [(i["name"], i["outcome"]) for i in result.json()["items"]] == [
        ("a", "unchanged"),
        ("b", "pruned"),
    ]
    names = [i["metadata"]["name"] for i in client.get("/api/v1/vms").json()["items"]]
    assert names == ["a", "other"]
    for empty in ({}, {"labelSelector": " , "}):
        params = {"prune": "true", **empty}
        assert_status(
            client.post("/api/v1/apply", json=[vm("a")], params=params), 400, "BadRequest"
        )
    assert client.get("/api/v1/vms/other").status_code == 200


@pytest.mark.parametrize(
    ("method", "path", "code", "reason"),
    [
        ("DELETE", "/api/v1/apply", 405, "MethodNotAllowed"),
        ("GET", "/api/v1/nothing", 404, "NotFound"),
        ("GET", "/api/v1/vms/..", 404, "NotFound"),
        ("GET", "/api/v1/vms/UPPER", 404, "NotFound"),
        ("GET", "/api/v1/vms?watch=true&resourceVersion=abc", 400, "BadRequest"),
        ("GET", "/api/v1/vms?watch=true&resourceVersion=1", 410, "Expired"),
    ],
)
def test_error_shape_everywhere(
    client: TestClient, method: str, path: str, code: int, reason: str
) -> None:
    # resourceVersion 1 predates this test's root: older than the cache can replay.
    client.post("/api/v1/vms", json=vm())
    assert_status(client.request(method, path), code, reason)


def test_unsupported_media_type_and_chunked_oversize(store: Store) -> None:
    settings = Settings(root=store.root, max_body_bytes=2048)
    with TestClient(create_app(settings, store)) as client:
        response = client.post(
            "/api/v1/vms", content=b"<xml/>", headers={"content-type": "application/xml"}
        )
        assert_status(response, 415, "UnsupportedMediaType")

        def chunks() -> Iterator[bytes]:
            yield b'{"node": "'
            yield b"x" * 4096
            yield b'"}'

        response = client.post(
            "/api/v1/vms/web1/migrate",
            content=chunks(),
            headers={"content-type": "application/json"},
        )
        assert_status(response, 413, "RequestEntityTooLarge")
