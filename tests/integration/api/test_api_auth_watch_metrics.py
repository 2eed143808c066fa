"""Auth (tokens, roles, TLS), watch streams and /metrics, against a live uvicorn."""

from __future__ import annotations

import json
import shutil
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.config import Settings
from schemas import VirtualMachine, VirtualMachineStatus, VMPhase
from tests.helpers import wait_for
from tests.integration.api.api_helpers import assert_status, live_server, node, vm
from zkstore import Store

ADMIN = "admin-token-0123456789"
READER = "reader-token-0123456789"


@pytest.fixture
def secured(store: Store) -> Iterator[TestClient]:
    settings = Settings.model_validate(
        {
            "root": store.root,
            "tokens": [{"token": ADMIN, "role": "admin"}, {"token": READER, "role": "readonly"}],
        }
    )
    with TestClient(create_app(settings, store)) as client:
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_tokens_and_roles(secured: TestClient) -> None:
    assert secured.get("/healthz").status_code == 200
    assert_status(secured.get("/api/v1/vms"), 401, "Unauthorized")
    assert_status(secured.get("/metrics"), 401, "Unauthorized")
    assert_status(
        secured.get("/api/v1/vms", headers=bearer("wrong-token-000000")), 401, "Unauthorized"
    )
    assert secured.get("/api/v1/vms", headers=bearer(READER)).status_code == 200
    body = vm()
    assert_status(secured.post("/api/v1/vms", json=body, headers=bearer(READER)), 403, "Forbidden")
    assert_status(secured.post("/api/v1/vms/web1/stop", headers=bearer(READER)), 403, "Forbidden")
    assert secured.post("/api/v1/vms", json=body, headers=bearer(ADMIN)).status_code == 201


def test_open_access_without_tokens(store: Store) -> None:
    with TestClient(create_app(Settings(root=store.root), store)) as client:
        assert client.post("/api/v1/vms", json=vm()).status_code == 201


def test_a_short_token_is_refused_in_config() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        Settings.model_validate({"tokens": [{"token": "short", "role": "admin"}]})


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_tls_when_a_certificate_is_configured(store: Store, tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"),
            *("-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    settings = Settings(root=store.root, cert_file=str(cert), key_file=str(key))
    with live_server(store, settings) as url:
        assert url.startswith("https://")
        assert (
            httpx.get(f"{url}/healthz", verify=ssl.create_default_context(cafile=str(cert))).json()[
                "status"
            ]
            == "ok"
        )
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{url}/healthz")  # not trusted without the CA


def test_secrets_stay_out_of_every_new_endpoint(store: Store) -> None:
    fence = {"agent": "ipmi", "address": "10.0.0.9", "password": "t0p-s3cret"}
    with TestClient(create_app(Settings(root=store.root), store)) as client:
        client.post("/api/v1/nodes", json=node("hv1", fence=fence))
        headers = {"content-type": "application/merge-patch+json"}
        answers = [
            client.post("/api/v1/nodes/hv1/flush"),
            client.post("/api/v1/nodes/hv1/primary"),
            client.patch(
                "/api/v1/nodes/hv1", content='{"spec":{"coordinator":true}}', headers=headers
            ),
            client.post(
                "/api/v1/apply",
                json=[node("hv1", fence={**fence, "user": "x"})],
                params={"dryRun": "true"},
            ),
            client.get("/api/v1/events"),
            client.get("/api/v1/nodes?watch=true&timeoutSeconds=1"),
            client.delete("/api/v1/nodes/hv1", params={"dryRun": "true"}),
        ]
        for answer in answers:
            assert answer.status_code < 300, answer.text
            assert "t0p-s3cret" not in answer.text


def lines(response: httpx.Response) -> Iterator[dict[str, Any]]:
    for line in response.iter_lines():
        if line:
            yield json.loads(line)


def test_watch_streams_changes_as_they_happen(store: Store) -> None:
    from schemas import parse_resource

    with live_server(store) as url:
        httpx.post(f"{url}/api/v1/vms", json=vm("a")).raise_for_status()
        with httpx.stream("GET", f"{url}/api/v1/vms?watch=true", timeout=10) as response:
            events = lines(response)
            first = next(events)
            assert (first["type"], first["object"]["metadata"]["name"]) == ("ADDED", "a")
            httpx.post(f"{url}/api/v1/vms", json=vm("b")).raise_for_status()
            assert next(events)["type"] == "ADDED"
            status = VirtualMachineStatus(phase=VMPhase.RUNNING, node="n1")
            store.write_status(VirtualMachine, "a", status)
            changed = next(events)
            assert changed["type"] == "MODIFIED"
            assert changed["object"]["status"]["phase"] == "Running"
            obj = parse_resource(vm("b", vcpus=2))
            store.update(obj)
            assert next(events)["object"]["spec"]["vcpus"] == 2
            httpx.delete(f"{url}/api/v1/vms/a").raise_for_status()
            gone = next(events)
            assert (gone["type"], gone["object"]["metadata"]["name"]) == ("DELETED", "a")


def test_watch_resumes_from_a_list_resource_version(store: Store) -> None:
    with TestClient(create_app(Settings(root=store.root), store)) as client:
        client.post("/api/v1/vms", json=vm("a"))
        client.post("/api/v1/vms", json=vm("b"))
        listed = client.get("/api/v1/vms").json()
        since = listed["metadata"]["resourceVersion"]
        client.post("/api/v1/vms/a/stop")
        client.delete("/api/v1/vms/b")
        client.post("/api/v1/vms", json=vm("c", labels={"app": "db"}))
        response = client.get(f"/api/v1/vms?watch=true&resourceVersion={since}&timeoutSeconds=1")
        assert response.headers["content-type"].startswith("application/x-ndjson")
        events = [json.loads(line) for line in response.text.splitlines()]
        assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
            ("MODIFIED", "a"),
            ("DELETED", "b"),
            ("ADDED", "c"),
        ]
        # Resuming from the last event's resourceVersion replays nothing more.
        last = events[-1]["resourceVersion"]
        again = client.get(f"/api/v1/vms?watch=true&resourceVersion={last}&timeoutSeconds=1")
        assert again.text == ""
        selected = client.get(
            f"/api/v1/vms?watch=true&resourceVersion={since}&timeoutSeconds=1&labelSelector=app=db"
        )
        assert [
            json.loads(x)["object"]["metadata"]["name"] for x in selected.text.splitlines()
        ] == ["c"]


def test_watch_from_before_the_ring_is_410(store: Store) -> None:
    settings = Settings(root=store.root, watch_cache_events=10)
    with TestClient(create_app(settings, store)) as client:
        client.post("/api/v1/vms", json=vm("a"))
        since = client.get("/api/v1/vms").json()["metadata"]["resourceVersion"]
        for i in range(12):
            client.post("/api/v1/vms", json=vm(f"n{i}"))
        body = assert_status(
            client.get(f"/api/v1/vms?watch=true&resourceVersion={since}&timeoutSeconds=1"),
            410,
            "Expired",
        )
        assert "list again" in body["message"]


def test_metrics_count_requests_and_objects(store: Store) -> None:
    with TestClient(create_app(Settings(root=store.root), store)) as client:
        client.post("/api/v1/vms", json=vm("a"))
        client.get("/api/v1/vms/a")
        client.get("/api/v1/vms/missing")
        store.write_status(VirtualMachine, "a", VirtualMachineStatus(phase=VMPhase.RUNNING))
        client.post("/api/v1/nodes", json=node("n1"))
        wait_for(
            lambda: 'pvc_vms{phase="Running"} 1.0' in client.get("/metrics").text,
            10,
            "the VM phase gauge",
        )
        text = client.get("/metrics").text
    assert 'pvc_api_requests_total{code="201",method="POST",route="/api/v1/vms"} 1.0' in text
    assert 'code="404",method="GET",route="/api/v1/vms/{name}"' in text
    latency = "pvc_api_request_duration_seconds_count"
    assert f'{latency}{{code="404",method="GET",route="/api/v1/vms/{{name}}"}} 1.0' in text
    assert 'pvc_objects{kind="VirtualMachine"} 1.0' in text
    assert 'pvc_objects{kind="Node"} 1.0' in text
