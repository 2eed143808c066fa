"""The verbs that write a placement, and a delete that removes an object, are carried out by
the primary (controllers/requests.py): the API answers with its outcome, a refusal the
primary decides is the API's answer as before, and with no primary the API answers 503 in
its deadline with nothing changed and no request left behind."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.config import Settings
from localcluster.zookeeper import ZooKeeperServer
from schemas import Placement, VirtualMachine
from tests.helpers import wait_for
from tests.integration.api.api_helpers import assert_status, node, primary_requests, vm
from zkstore import Store, paths

DEADLINE = 0.5


@pytest.fixture
def bare(zookeeper: ZooKeeperServer, zk_root: str) -> Iterator[Store]:
    """A store with no primary acting on it (not the ``store`` fixture, which has one)."""
    the_store = Store(zookeeper.hosts, zk_root, timeout=6.0)
    the_store.start()
    yield the_store
    the_store.stop()


@pytest.fixture
def client(bare: Store) -> Iterator[TestClient]:
    settings = Settings(root=bare.root, primary_request_timeout=DEADLINE)
    with TestClient(create_app(settings, bare)) as test_client:
        for name in ("n1", "n2", "n3"):
            assert test_client.post("/api/v1/nodes", json=node(name)).status_code == 201
        test_client.post("/api/v1/vms", json=vm(placement={"home": "n1"}))
        bare.write_placement("web1", Placement(node="n1", epoch=0, reason="scheduled"), epoch=None)
        yield test_client


def requests_left(store: Store) -> list[str]:
    return list(store.client.get_children(store.path(paths.REQUESTS)))


def reasons(client: TestClient) -> list[str]:
    items = client.get("/api/v1/events", params={"kind": "VirtualMachine", "name": "web1"})
    return [e["reason"] for e in items.json()["items"]]


def test_the_primary_carries_out_a_migrate_and_its_refusal_is_the_409_of_today(
    client: TestClient, bare: Store, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="controllers.requests"):
        with primary_requests(bare, "hv-primary") as primary:
            answer = client.post("/api/v1/vms/web1/migrate", json={"node": "n2"})
        assert answer.status_code == 200, answer.text
    placement = bare.read_placement("web1")
    assert placement is not None and (placement.node, placement.migration) == ("n2", "n1")
    assert placement.epoch == primary.epoch
    assert requests_left(bare) == []  # the API removed it once it read the outcome
    taken = [r.getMessage() for r in caplog.records if "event=request_taken" in r.getMessage()]
    assert len(taken) == 1 and "verb=place" in taken[0] and "requester=anonymous" in taken[0]

    # The API reads the VM on n2 and asks; before the primary acts, a drain moves it to n3.
    answers: list[httpx.Response] = []
    asking = threading.Thread(
        target=lambda: answers.append(client.post("/api/v1/vms/web1/migrate", json={"node": "n1"}))
    )
    settings: Any = client.app.state.settings  # type: ignore[attr-defined]
    settings.primary_request_timeout = 20.0
    asking.start()
    wait_for(lambda: requests_left(bare), 10, "the API's request")
    bare.write_placement("web1", Placement(node="n3", epoch=0, reason="drain"), epoch=None)
    with primary_requests(bare, "hv-primary"):
        asking.join(20)
    body = assert_status(answers[0], 409, "Conflict")
    assert body["message"] == "VM 'web1' is no longer on n2 (now n3)"
    assert bare.read_placement("web1").node == "n3"  # type: ignore[union-attr]
    assert {"MigrateRequested", "MigrateRefused"} <= set(reasons(client))
    assert requests_left(bare) == []


def test_with_no_primary_the_api_answers_503_in_its_deadline_and_nothing_changed(
    client: TestClient, bare: Store
) -> None:
    before = bare.read_placement_versioned("web1")
    for method, path, params, body in (
        ("POST", "/api/v1/vms/web1/migrate", {}, {"node": "n2"}),
        ("DELETE", "/api/v1/vms/web1", {"force": "true"}, None),
        ("DELETE", "/api/v1/nodes/n3", {}, None),  # its removal takes its status too
    ):
        started = time.monotonic()
        answer = client.request(method, path, params=params, json=body)
        took = time.monotonic() - started
        body_ = assert_status(answer, 503, "ServiceUnavailable")
        assert body_["message"] == (
            f"no primary carried out the request within {DEADLINE:g} s; nothing changed"
        )
        assert DEADLINE <= took < DEADLINE + 3.0
        assert requests_left(bare) == []  # withdrawn: no primary can carry it out later
    assert bare.read_placement_versioned("web1") == before
    assert bare.exists(VirtualMachine, "web1")
    assert client.get("/api/v1/nodes/n3").status_code == 200
