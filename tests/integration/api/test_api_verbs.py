"""Verbs: each writes only spec, an annotation or the placement record, and returns the object."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.config import Settings
from schemas import (
    Cluster,
    ClusterStatus,
    DaemonState,
    Node,
    NodeStatus,
    Placement,
    RouterState,
    VirtualMachine,
    VirtualMachineStatus,
    VMPhase,
    verbs,
)
from tests.integration.api.api_helpers import assert_status, node, vm
from zkstore import Store


@pytest.fixture
def client(store: Store) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(root=store.root), store)) as test_client:
        for name in ("n1", "n2", "n3"):
            assert test_client.post("/api/v1/nodes", json=node(name)).status_code == 201
        yield test_client


def post(client: TestClient, path: str, **body: object) -> dict[str, object]:
    response = client.post(path, json=body or None)
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_start_stop_force_stop_restart(client: TestClient, store: Store) -> None:
    client.post("/api/v1/vms", json=vm(runStrategy="Halted"))
    started = post(client, "/api/v1/vms/web1/start")
    assert started["spec"]["runStrategy"] == "Always"  # type: ignore[index]
    stopped = post(client, "/api/v1/vms/web1/stop")
    assert stopped["spec"]["runStrategy"] == "Halted"  # type: ignore[index]
    restarted = post(client, "/api/v1/vms/web1/restart")
    stamp = restarted["metadata"]["annotations"][verbs.RESTART]  # type: ignore[index]
    again = post(client, "/api/v1/vms/web1/restart")
    assert again["metadata"]["annotations"][verbs.RESTART] > stamp  # type: ignore[index]
    forced = post(client, "/api/v1/vms/web1/force-stop")
    assert verbs.FORCE_STOP in forced["metadata"]["annotations"]  # type: ignore[operator,index]
    assert forced["spec"]["runStrategy"] == "Halted"  # type: ignore[index]
    # Annotations are not spec: restart did not bump the generation.
    assert again["metadata"]["generation"] == restarted["metadata"]["generation"]  # type: ignore[index]


def test_migrate_writes_placement_not_spec_and_unmigrate_returns(
    client: TestClient, store: Store
) -> None:
    client.post("/api/v1/vms", json=vm(placement={"home": "n1"}))
    store.write_placement("web1", Placement(node="n1", epoch=0, reason="scheduled"), epoch=None)
    before = client.get("/api/v1/vms/web1").json()
    migrated = post(client, "/api/v1/vms/web1/migrate", node="n2")
    assert migrated["spec"] == before["spec"]
    assert migrated["metadata"]["generation"] == before["metadata"]["generation"]  # type: ignore[index]
    placement = store.read_placement("web1")
    assert placement is not None
    assert (placement.node, placement.reason, placement.migration) == ("n2", "migrate", "n1")
    assert store.node_index_entry("n2", "web1") is not None
    assert store.node_index_entry("n1", "web1") is None
    assert placement.method is None  # spec.migration.method decides
    # A second hop keeps the original source for unmigrate.
    post(client, "/api/v1/vms/web1/migrate", node="n3")
    assert store.read_placement("web1").migration == "n1"  # type: ignore[union-attr]
    post(client, "/api/v1/vms/web1/unmigrate")
    placement = store.read_placement("web1")
    assert placement is not None
    assert (placement.node, placement.reason, placement.migration) == ("n1", "unmigrate", None)


def _running_on(store: Store, name: str, node_name: str, **status: object) -> None:
    store.write_placement(name, Placement(node=node_name, epoch=0, reason="scheduled"), epoch=None)
    store.write_status(
        VirtualMachine, name, VirtualMachineStatus(phase=VMPhase.RUNNING, node=node_name)
    )
    for each in ("n1", "n2", "n3"):
        store.write_status(
            Node,
            each,
            NodeStatus(
                daemon_state=DaemonState.RUN,
                conditions=[
                    {"type": "Ready", "status": "True", "reason": "HeartbeatOK", "message": ""}
                ],
                **status,  # type: ignore[arg-type]
            ),
        )


def test_migrate_to_the_node_it_is_on_is_a_conflict(client: TestClient, store: Store) -> None:
    client.post("/api/v1/vms", json=vm(placement={"home": "n1"}))
    _running_on(store, "web1", "n1")
    before = store.read_placement("web1")
    body = assert_status(
        client.post("/api/v1/vms/web1/migrate", json={"node": "n1"}), 409, "Conflict"
    )
    assert "already placed on 'n1'" in body["message"]
    assert store.read_placement("web1") == before


def test_forced_live_migrate_is_refused_where_it_cannot_be_live(
    client: TestClient, store: Store
) -> None:
    client.post("/api/v1/vms", json=vm(placement={"home": "n1"}))
    _running_on(
        store,
        "web1",
        "n1",
        live_migration_problem="libvirt's test driver (test:///) cannot live-migrate",
    )
    before = store.read_placement("web1")
    body = assert_status(
        client.post("/api/v1/vms/web1/migrate", json={"node": "n2", "live": True}),
        409,
        "Conflict",
    )
    assert "cannot be live-migrated" in body["message"]
    assert "test driver" in body["message"]
    assert store.read_placement("web1") == before
    # Without --live it may move (auto falls back to a shutdown move on such nodes).
    post(client, "/api/v1/vms/web1/migrate", node="n2")
    placement = store.read_placement("web1")
    assert placement is not None and placement.node == "n2" and placement.method is None


def test_forced_live_migrate_writes_method_live(client: TestClient, store: Store) -> None:
    client.post("/api/v1/vms", json=vm(placement={"home": "n1"}))
    _running_on(store, "web1", "n1", migration_uri="qemu+tcp://n2/system")
    post(client, "/api/v1/vms/web1/migrate", node="n2", live=True)
    placement = store.read_placement("web1")
    assert placement is not None
    assert (placement.node, placement.method) == ("n2", "live")


def test_live_migrate_of_a_vm_not_running_is_refused(client: TestClient, store: Store) -> None:
    client.post("/api/v1/vms", json=vm(placement={"home": "n1"}))
    store.write_placement("web1", Placement(node="n1", epoch=0, reason="s"), epoch=None)
    body = assert_status(
        client.post("/api/v1/vms/web1/migrate", json={"node": "n2", "live": True}),
        409,
        "Conflict",
    )
    assert "not running on n1" in body["message"]


def test_migrate_refuses_unknown_or_disallowed_nodes_unless_forced(client: TestClient) -> None:
    client.post("/api/v1/vms", json=vm(placement={"nodes": ["n1", "n2"]}))
    body = assert_status(
        client.post("/api/v1/vms/web1/migrate", json={"node": "nope"}), 422, "Invalid"
    )
    assert body["details"]["field"] == "node"
    assert_status(client.post("/api/v1/vms/web1/migrate", json={"node": "n3"}), 422, "Invalid")
    assert client.post("/api/v1/vms/web1/migrate", json={"node": "n3", "force": True}).is_success
    assert_status(client.post("/api/v1/vms/web1/migrate", json={}), 422, "Invalid")
    assert_status(client.post("/api/v1/vms/none/migrate", json={"node": "n1"}), 404, "NotFound")


def test_move_changes_home_and_placement(client: TestClient, store: Store) -> None:
    client.post("/api/v1/vms", json=vm(placement={"home": "n1"}))
    moved = post(client, "/api/v1/vms/web1/move", node="n2")
    assert moved["spec"]["placement"]["home"] == "n2"  # type: ignore[index]
    placement = store.read_placement("web1")
    assert placement is not None and (placement.node, placement.reason) == ("n2", "move")
    client.post("/api/v1/vms", json=vm("limited", placement={"nodes": ["n1"]}))
    assert_status(client.post("/api/v1/vms/limited/move", json={"node": "n2"}), 422, "Invalid")


def test_node_flush_ready_primary_secondary(client: TestClient) -> None:
    assert post(client, "/api/v1/nodes/n1/flush")["spec"]["drain"] is True  # type: ignore[index]
    assert post(client, "/api/v1/nodes/n1/ready")["spec"]["drain"] is False  # type: ignore[index]
    # No Cluster object yet: primary creates it with defaults.
    cluster = post(client, "/api/v1/nodes/n2/primary")
    assert cluster["kind"] == "Cluster" and cluster["spec"]["primary"] == "n2"  # type: ignore[index]
    assert "primary" in post(client, "/api/v1/nodes/n1/secondary")["spec"]  # type: ignore[operator]
    assert "primary" not in post(client, "/api/v1/nodes/n2/secondary")["spec"]  # type: ignore[operator]
    assert_status(client.post("/api/v1/nodes/ghost/flush"), 404, "NotFound")


def test_cluster_maintenance_on_off(client: TestClient) -> None:
    on = post(client, "/api/v1/clusters/cluster/maintenance", enabled=True)
    assert on["spec"]["maintenance"] is True  # type: ignore[index]
    off = post(client, "/api/v1/clusters/cluster/maintenance", enabled=False)
    assert off["spec"]["maintenance"] is False  # type: ignore[index]
    assert_status(
        client.post("/api/v1/clusters/other/maintenance", json={"enabled": True}), 404, "NotFound"
    )
    assert_status(
        client.post("/api/v1/clusters/cluster/maintenance", json={"enabled": "maybe"}),
        422,
        "Invalid",
    )


def test_verbs_leave_events(client: TestClient) -> None:
    client.post("/api/v1/vms", json=vm())
    post(client, "/api/v1/vms/web1/restart")
    items = client.get("/api/v1/events", params={"kind": "vm", "name": "web1"}).json()["items"]
    # Each write also leaves an audit event (reason Write): see test_api_audit_tokens.py.
    assert [e["reason"] for e in items if e["reason"] != "Write"] == ["Created", "RestartRequested"]


def test_secondary_on_the_primary_hands_over_to_a_live_coordinator(
    client: TestClient, store: Store
) -> None:
    post(client, "/api/v1/nodes/n1/primary")
    store.write_status(Cluster, "cluster", ClusterStatus(primary="n1", epoch=3))
    # No other coordinator is up: nobody can take over, and nothing changes.
    assert_status(client.post("/api/v1/nodes/n1/secondary"), 409, "Conflict")
    assert store.get(Cluster, "cluster").spec.primary == "n1"
    store.mutate_spec(Node, "n3", lambda n: setattr(n.spec, "coordinator", True))
    store.write_status(
        Node, "n3", NodeStatus(daemon_state=DaemonState.RUN, router_state=RouterState.SECONDARY)
    )
    cluster = post(client, "/api/v1/nodes/n1/secondary")
    assert cluster["spec"]["primary"] == "n3"  # type: ignore[index]
