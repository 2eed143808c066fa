"""/docs without internet access and with tokens, and 405 answers that say what is allowed."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.config import Settings
from tests.integration.api.api_helpers import assert_status
from zkstore import Store

ADMIN = "admin-token-0123456789"


@pytest.fixture(scope="module")
def module_store(zookeeper) -> Iterator[Store]:  # type: ignore[no-untyped-def]
    import uuid

    store = Store(zookeeper.hosts, f"/docs-{uuid.uuid4().hex[:8]}", timeout=6.0)
    store.start()
    yield store
    store.stop()


@pytest.fixture(scope="module")
def secured(module_store: Store) -> Iterator[TestClient]:
    settings = Settings.model_validate(
        {"root": module_store.root, "tokens": [{"token": ADMIN, "role": "admin"}]}
    )
    with TestClient(create_app(settings, module_store)) as client:
        yield client


@pytest.fixture(scope="module")
def open_client(module_store: Store) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(root=module_store.root), module_store)) as client:
        yield client


def test_docs_load_from_this_server_only_and_with_no_token(secured: TestClient) -> None:
    page = secured.get("/docs")
    assert page.status_code == 200, page.text
    assert "https://" not in page.text and "http://" not in page.text
    assets = re.findall(r"""(?:src|href)=["']([^"']+)["']""", page.text)
    assert any(a.endswith(".js") for a in assets) and any(a.endswith(".css") for a in assets)
    for asset in assets:
        answer = secured.get(asset)
        assert answer.status_code == 200, asset
        assert answer.content, asset
    # The page's script loads the document it names, with no token either.
    assert "'/openapi.json'" in page.text or '"/openapi.json"' in page.text
    assert secured.get("/openapi.json").status_code == 200
    # Only the docs are open: the data still needs a token.
    assert_status(secured.get("/api/v1/vms"), 401, "Unauthorized")
    assert secured.get("/redoc").status_code in (401, 404)  # no CDN-based page left


def test_openapi_declares_bearer_and_requires_it_when_tokens_are_set(
    secured: TestClient, open_client: TestClient
) -> None:
    secured_doc = secured.get("/openapi.json").json()
    scheme = secured_doc["components"]["securitySchemes"]["bearer"]
    assert scheme["type"] == "http" and scheme["scheme"] == "bearer"
    paths = secured_doc["paths"]
    assert paths["/api/v1/vms"]["get"]["security"] == [{"bearer": []}]
    assert paths["/healthz"]["get"]["security"] == []
    # Without tokens the server asks for none: the scheme is there, no operation needs it.
    open_doc = open_client.get("/openapi.json").json()
    assert "bearer" in open_doc["components"]["securitySchemes"]
    assert "security" not in open_doc["paths"]["/api/v1/vms"]["get"]


def test_an_undeclared_method_is_405_with_allow(open_client: TestClient) -> None:
    answer = open_client.request("TRACE", "/api/v1/vms")
    body = assert_status(answer, 405, "MethodNotAllowed")
    assert body["message"]
    assert set(answer.headers["allow"].split(", ")) == {"GET", "POST"}
    answer = open_client.request("PUT", "/metrics")
    assert_status(answer, 405, "MethodNotAllowed")
    assert answer.headers["allow"] == "GET"
