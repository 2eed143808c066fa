"""Hashed bearer tokens and the audit of writes, against a real ZooKeeper."""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.config import Settings
from api.tokens import hash_token
from localcluster.zookeeper import ZooKeeperServer
from tests.helpers import wait_for
from tests.integration.api.api_helpers import assert_status, vm
from zkstore import Store

ALICE = "alice-token-0123456789abcdef"
BOB = "bob-token-0123456789abcdef"
READER = "reader-token-0123456789abcdef"
HASHES = [hash_token(t) for t in (ALICE, BOB, READER)]


@pytest.fixture(scope="module")
def client(zookeeper: ZooKeeperServer) -> Iterator[TestClient]:
    store = Store(zookeeper.hosts, f"/audit-{uuid.uuid4().hex[:10]}", timeout=6.0)
    store.start()
    settings = Settings.model_validate(
        {
            "root": store.root,
            "tokens": [
                {"name": "alice", "role": "admin", "hash": HASHES[0]},
                {"name": "bob", "role": "admin", "hash": HASHES[1]},
                {"name": "reader", "role": "readonly", "hash": HASHES[2]},
            ],
        }
    )
    try:
        with TestClient(create_app(settings, store)) as test_client:
            yield test_client
    finally:
        store.stop()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def audit_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "pvcapid.audit"]


def test_hashed_tokens_authenticate_and_writes_are_audited_by_name(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    assert client.get("/api/v1/vms", headers=bearer(READER)).status_code == 200
    assert_status(client.get("/api/v1/vms", headers=bearer(ALICE[:-1] + "x")), 401, "Unauthorized")
    created = client.post("/api/v1/vms", json=vm("audited"), headers=bearer(ALICE))
    assert created.status_code == 201, created.text
    patch = {"metadata": {"labels": {"tier": "gold"}}}
    patched = client.patch(
        "/api/v1/vms/audited",
        json=patch,
        headers={**bearer(BOB), "Content-Type": "application/merge-patch+json"},
    )
    assert patched.status_code == 200, patched.text
    refused = client.post("/api/v1/vms/audited/stop", headers=bearer(READER))
    assert_status(refused, 403, "Forbidden")
    lines = audit_lines(caplog)
    expected = [
        "token=alice verb=create object=VirtualMachine/audited code=201",
        "token=bob verb=patch object=VirtualMachine/audited code=200",
        "token=reader verb=stop object=VirtualMachine/audited code=403",
    ]
    for part in expected:
        assert any(f"event=audit {part} dryRun=false time=" in line for line in lines), lines
    assert len(lines) == 3, lines  # the two reads and the 401 read are not audited

    def writes() -> list[str]:
        found = client.get(
            "/api/v1/events", params={"kind": "vm", "name": "audited"}, headers=bearer(READER)
        ).json()["items"]
        return [e["message"] for e in found if e["reason"] == "Write"]

    # Only the writes that were carried out are events on the object.
    wait_for(lambda: writes() == ["create by alice", "patch by bob"], 10, "Write events")
    # No token and no digest in any log line or answer.
    answers = created.text + patched.text + refused.text
    for secret in (ALICE, BOB, READER, *HASHES, *(h.removeprefix("sha256:") for h in HASHES)):
        assert secret not in caplog.text and secret not in answers


def test_a_refused_write_is_logged_with_its_code_and_no_event(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    bad = vm("bad-one", memory="lots")
    assert_status(client.post("/api/v1/vms", json=bad, headers=bearer(ALICE)), 422, "Invalid")
    unknown = client.delete("/api/v1/vms/nobody", headers=bearer(BOB))
    assert_status(unknown, 404, "NotFound")
    stranger = client.delete("/api/v1/vms/audited", headers=bearer("x" * 20))
    assert_status(stranger, 401, "Unauthorized")
    lines = audit_lines(caplog)
    assert any(
        re.search(r"token=alice verb=create object=VirtualMachine code=422 ", line)
        for line in lines
    ), lines
    assert any("token=bob verb=delete object=VirtualMachine/nobody code=404" in x for x in lines)
    assert any(
        "token=unauthenticated verb=delete object=VirtualMachine/audited code=401" in x
        for x in lines
    )
    assert "memory" not in caplog.text and "lots" not in caplog.text  # never the body
    assert client.get("/api/v1/vms/audited", headers=bearer(READER)).status_code == 200


def test_apply_is_audited_per_object_and_dry_runs_make_no_event(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    body = [vm("applied-a"), vm("applied-b")]
    # "yes" as FastAPI reads it: a dry run (the audit once took only true and 1 for one).
    dry = client.post("/api/v1/apply", params={"dryRun": "yes"}, json=body, headers=bearer(BOB))
    assert dry.status_code == 200, dry.text
    assert client.post("/api/v1/apply", json=body, headers=bearer(BOB)).status_code == 200
    lines = audit_lines(caplog)
    for name in ("applied-a", "applied-b"):
        for dry_run in ("true", "false"):
            wanted = f"token=bob verb=apply object=VirtualMachine/{name} code=200 dryRun={dry_run}"
            assert any(wanted in line for line in lines), lines

    def writes() -> list[str]:
        found = client.get(
            "/api/v1/events", params={"kind": "vm", "name": "applied-a"}, headers=bearer(BOB)
        ).json()["items"]
        return [e["message"] for e in found if e["reason"] == "Write"]

    wait_for(lambda: writes() == ["apply by bob"], 10, "one Write event (none for the dry run)")
