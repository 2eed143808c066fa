"""Secrets through the API as pvcapid runs it (the api ZooKeeper identity on a secured root,
which may set secrets but never read them): a new password is stored and reported, the
same one is no change, a removed one leaves nothing behind, and a write whose secret part
is refused writes nothing at all."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient
from kazoo.client import KazooClient
from kazoo.security import ACL, Permissions

from api.app import create_app
from api.config import Settings
from controllers.secure_store import main as secure_main
from localcluster.zookeeper import ZooKeeperServer
from schemas import Node
from schemas.resource import SECRET_DIGESTS
from tests.integration.api.api_helpers import node
from tests.integration.zkstore.test_zkstore_acl import (
    PASSWORDS,
    client_as,
    fence_password,
    secure_config,
    store_as,
)
from zkstore import Store, paths
from zkstore.acl import AclPolicy, Identity
from zkstore.codec import decode

FENCE = {"agent": "ipmi", "address": "10.0.0.9", "user": "root"}


@dataclass
class Secured:
    api: TestClient
    coordinator: Store
    admin: KazooClient
    root: str


@pytest.fixture(scope="module")
def secured(
    zookeeper: ZooKeeperServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Secured]:
    root = f"/secrets-{uuid.uuid4().hex[:10]}"
    config = secure_config(tmp_path_factory.mktemp("secrets"), zookeeper.hosts, root)
    assert secure_main(["--config", str(config)]) == 0
    api_store = store_as(zookeeper.hosts, root, "api")
    coordinator = store_as(zookeeper.hosts, root, "coordinator")
    admin = client_as(zookeeper.hosts, "admin")
    app = create_app(Settings(root=root), api_store)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield Secured(client, coordinator, admin, root)
    for store in (api_store, coordinator):
        store.stop()
    admin.stop()
    admin.close()


def fenced_node(name: str, password: str | None) -> dict[str, Any]:
    fence = {**FENCE, **({"password": password} if password is not None else {})}
    return node(name, fence=fence)


def apply(secured: Secured, *docs: dict[str, Any], **params: str) -> list[dict[str, Any]]:
    response = secured.api.post("/api/v1/apply", json=list(docs), params=params)
    assert response.status_code == 200, response.text
    return list(response.json()["items"])


def stored_password(secured: Secured, name: str) -> str | None:
    coordinator = secured.coordinator
    return fence_password(coordinator.reveal(coordinator.get(Node, name)))


def test_an_apply_of_only_a_new_password_stores_it_and_says_configured(secured: Secured) -> None:
    assert apply(secured, fenced_node("hv1", "first"))[0]["outcome"] == "created"
    changed = apply(secured, fenced_node("hv1", "second"))[0]
    assert (changed["outcome"], changed["generation"]) == ("configured", 2)
    assert stored_password(secured, "hv1") == "second"
    shown = secured.api.get("/api/v1/nodes/hv1").text
    assert "second" not in shown and "scrypt" not in shown  # nor its digest
    # The same password again: known unchanged from its digest, never read by the API.
    same = apply(secured, fenced_node("hv1", "second"))[0]
    assert (same["outcome"], same["generation"]) == ("unchanged", 2)

    dry = secured.api.post(
        "/api/v1/apply", json=[fenced_node("hv1", "third")], params={"dryRun": "true"}
    )
    item = dry.json()["items"][0]
    assert item["outcome"] == "configured" and item["changedSecrets"] == ["fence.password"]
    assert item["before"]["spec"]["fence"]["password"] == "********"
    assert item["after"]["spec"]["fence"]["password"] == "******** (changed)"
    assert "third" not in dry.text and stored_password(secured, "hv1") == "second"
    unchanged = apply(secured, fenced_node("hv1", "second"), dryRun="true")[0]
    assert unchanged["outcome"] == "unchanged"

    # A restore shares the apply's write: a new password is a change there too.
    restored = secured.api.post(
        "/api/v1/restore", json=[fenced_node("hv1", "fourth")], params={"merge": "true"}
    )
    assert restored.status_code == 200, restored.text
    assert restored.json()["items"][0]["outcome"] == "configured"
    assert stored_password(secured, "hv1") == "fourth"


def test_a_password_removed_from_the_spec_is_removed_from_the_store(secured: Secured) -> None:
    apply(secured, fenced_node("hv2", "s3cret"))
    secret = secured.root + paths.secret("nodes", "hv2")
    spec = secured.root + paths.resource("nodes", "hv2")
    assert secured.admin.exists(secret) and SECRET_DIGESTS in decode(secured.admin.get(spec)[0])

    assert apply(secured, fenced_node("hv2", None))[0]["outcome"] == "configured"
    assert secured.admin.exists(secret) is None
    assert SECRET_DIGESTS not in decode(secured.admin.get(spec)[0])
    assert stored_password(secured, "hv2") is None
    # Given again, it is stored again.
    assert apply(secured, fenced_node("hv2", "back"))[0]["outcome"] == "configured"
    assert stored_password(secured, "hv2") == "back"


def test_a_write_whose_secret_is_refused_writes_nothing(secured: Secured) -> None:
    """The spec and its secret go in one transaction: when the secret's part fails (here the
    api identity loses the right to create secrets), the spec is not written either."""
    apply(secured, fenced_node("hv3", None))
    kind = secured.root + paths.secrets_kind("nodes")
    policy = AclPolicy(secured.root, {r: Identity(r, p).digest for r, p in PASSWORDS.items()})
    acls = policy.acl_for(kind)
    api = Identity("api", PASSWORDS["api"]).digest
    no_create = [ACL(a.perms & ~Permissions.CREATE, a.id) if a.id.id == api else a for a in acls]
    secured.admin.set_acls(kind, no_create)
    try:
        created = secured.api.post("/api/v1/nodes", json=fenced_node("hv4", "s3cret"))
        assert created.status_code == 403, created.text  # the store refused, said plainly
        assert "refused pvcapid's ZooKeeper identity" in created.json()["message"]
        assert secured.api.get("/api/v1/nodes/hv4").status_code == 404
        updated = secured.api.post("/api/v1/apply", json=[fenced_node("hv3", "s3cret")])
        assert updated.status_code == 403, updated.text
        after = secured.api.get("/api/v1/nodes/hv3").json()
        assert "password" not in after["spec"]["fence"]  # no mask without a password
        assert after["metadata"]["generation"] == 1
    finally:
        secured.admin.set_acls(kind, acls)
    assert secured.admin.exists(secured.root + paths.secret("nodes", "hv4")) is None
