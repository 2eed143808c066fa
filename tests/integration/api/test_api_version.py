"""GET /api/v1/version: the server's PVC version and the API version, for pvcctl version."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.config import Settings
from schemas.version import pvc_version
from tests.integration.api.api_helpers import assert_status
from zkstore import Store

ADMIN = "admin-token-0123456789"


@pytest.fixture
def secured(store: Store) -> Iterator[TestClient]:
    settings = Settings.model_validate(
        {"root": store.root, "tokens": [{"token": ADMIN, "role": "admin"}]}
    )
    with TestClient(create_app(settings, store)) as client:
        yield client


def test_version_names_the_installed_pvc_and_the_api_version(secured: TestClient) -> None:
    assert_status(secured.get("/api/v1/version"), 401, "Unauthorized")
    answer = secured.get("/api/v1/version", headers={"Authorization": f"Bearer {ADMIN}"})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"server": pvc_version(), "apiVersion": "pvc/v1"}
    assert pvc_version() not in ("", "unknown")
    documented = secured.get("/openapi.json").json()["paths"]["/api/v1/version"]["get"]
    schema = documented["responses"]["200"]["content"]["application/json"]["schema"]
    assert schema["$ref"].endswith("/VersionInfo")
