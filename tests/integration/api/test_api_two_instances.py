"""Two pvcapid instances over one ZooKeeper: no state of their own, positions that agree."""

from __future__ import annotations

import json

from fastapi.testclient import TestClient

from api.app import create_app
from api.config import Settings
from localcluster.zookeeper import ZooKeeperServer
from tests.helpers import wait_for
from tests.integration.api.api_helpers import vm
from zkstore import Store


def test_writes_through_one_instance_are_seen_and_watched_through_the_other(
    store: Store, zookeeper: ZooKeeperServer
) -> None:
    other = Store(zookeeper.hosts, store.root, timeout=6.0)
    other.start()
    try:
        with (
            TestClient(create_app(Settings(root=store.root), store)) as a,
            TestClient(create_app(Settings(root=store.root), other)) as b,
        ):
            a.post("/api/v1/vms", json=vm("x"))
            # B never saw the write, yet a get finds it (its cache catches up, or the store).
            assert b.get("/api/v1/vms/x").status_code == 200
            since = a.get("/api/v1/vms").json()["metadata"]["resourceVersion"]
            a.post("/api/v1/vms/x/stop")
            a.post("/api/v1/vms", json=vm("y"))
            wait_for(
                lambda: len(b.get("/api/v1/vms").json()["items"]) == 2, 10, "B to list both VMs"
            )
            # A position from A's list means the same on B: resume there.
            replay = b.get(f"/api/v1/vms?watch=true&resourceVersion={since}&timeoutSeconds=1")
            events = [json.loads(line) for line in replay.text.splitlines()]
            assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
                ("MODIFIED", "x"),
                ("ADDED", "y"),
            ]
    finally:
        other.stop()
