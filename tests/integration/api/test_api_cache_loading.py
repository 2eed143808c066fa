"""While the watch cache is still loading, pvcapid answers from ZooKeeper; watches wait."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.cache import KindCache
from api.config import Settings
from tests.integration.api.api_helpers import vm
from zkstore import Store


@pytest.fixture
def held(monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Event]:
    """Hold every kind's initial load until the test sets the event."""
    release = threading.Event()
    real_start = KindCache.start

    def slow_start(self: KindCache, timeout: float) -> None:
        release.wait(30)
        real_start(self, timeout)

    monkeypatch.setattr(KindCache, "start", slow_start)
    yield release
    release.set()


def test_serving_while_the_cache_loads(store: Store, held: threading.Event) -> None:
    settings = Settings(root=store.root, watch_cache_start_wait=0)
    with TestClient(create_app(settings, store)) as client:
        created = client.post("/api/v1/vms", json=vm("early"))
        assert created.status_code == 201
        listed = client.get("/api/v1/vms").json()
        assert [i["metadata"]["name"] for i in listed["items"]] == ["early"]
        assert listed["metadata"]["resourceVersion"] == "0"
        assert client.get("/api/v1/vms/early").status_code == 200
        assert client.get("/healthz").status_code == 200
        busy = client.get("/api/v1/vms?watch=true&timeoutSeconds=1")
        assert busy.status_code == 503 and busy.json()["reason"] == "ServiceUnavailable"
        held.set()
        events = client.get("/api/v1/vms?watch=true&timeoutSeconds=2")
        assert [json.loads(x)["type"] for x in events.text.splitlines()] == ["ADDED"]
