"""Backup and restore against a real ZooKeeper: what a backup holds (spec, no status, secrets
masked, restore order); a restore refuses a cluster with VMs without merge and a masked
secret with nothing stored to keep, writing nothing; over the same objects it keeps the
stored secret and changes nothing."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest

from localcluster.zookeeper import ZooKeeperServer
from schemas import Node, VirtualMachine, VirtualMachineStatus, VMPhase, parse_resource
from zkstore import Store
from zkstore.backup import MaskedSecret, NotEmpty, backup, check_restore, restore

OBJECTS = [
    {
        "apiVersion": "pvc/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": "web1", "labels": {"app": "web"}},
        "spec": {"memory": "64Mi", "disks": [{"name": "root", "pool": "shared", "size": "1Gi"}]},
    },
    {
        "apiVersion": "pvc/v1",
        "kind": "Node",
        "metadata": {"name": "n1"},
        "spec": {"fence": {"agent": "ipmi", "address": "10.0.0.9", "password": "s3cret"}},
    },
    {
        "apiVersion": "pvc/v1",
        "kind": "StoragePool",
        "metadata": {"name": "shared"},
        "spec": {"type": "shared", "path": "/srv/pool"},
    },
]


@pytest.fixture
def empty(zookeeper: ZooKeeperServer) -> Iterator[Store]:
    """Another root in the same ZooKeeper: a cluster with nothing in it yet."""
    fresh = Store(zookeeper.hosts, f"/empty-{uuid.uuid4().hex[:8]}", timeout=6.0)
    fresh.start()
    yield fresh
    fresh.stop()


def test_backup_then_restore(store: Store, empty: Store) -> None:
    for doc in OBJECTS:
        store.create(parse_resource(doc))
    store.write_status(VirtualMachine, "web1", VirtualMachineStatus(phase=VMPhase.RUNNING))

    saved = backup(store)
    text = json.dumps(saved)
    assert [(i["kind"], i["metadata"]["name"]) for i in saved["items"]] == [
        ("StoragePool", "shared"),
        ("Node", "n1"),
        ("VirtualMachine", "web1"),
    ], "in the order a restore needs"
    for absent in ("status", "uid", "resourceVersion", "generation", "creationTimestamp"):
        assert f'"{absent}"' not in text
    assert "s3cret" not in text and saved["items"][1]["spec"]["fence"]["password"] == "********"
    assert saved["items"][2]["metadata"] == {"name": "web1", "labels": {"app": "web"}}
    objects = [parse_resource(i) for i in saved["items"]]

    # Into a cluster with VMs: refused unless merge; with merge, the masked secret is the
    # stored one, so nothing changes.
    with pytest.raises(NotEmpty, match="it has 1 VirtualMachine"):
        check_restore(store, objects, merge=False)
    check_restore(store, objects, merge=True)
    assert [r.outcome for r in restore(store, objects)] == ["unchanged"] * 3
    node = store.reveal(store.get(Node, "n1")).spec.fence.password
    assert node is not None and node.get_secret_value() == "s3cret"

    # Into an empty cluster: the node's password is only a mask there: refused, naming it.
    with pytest.raises(MaskedSecret, match=r"Node 'n1' \(spec.fence.password\)"):
        check_restore(empty, objects, merge=False)
    assert empty.names(VirtualMachine) == [] and empty.names(Node) == []
    # With the secret written into the backup in its place, it restores.
    saved["items"][1]["spec"]["fence"]["password"] = "s3cret"
    objects = [parse_resource(i) for i in saved["items"]]
    check_restore(empty, objects, merge=False)
    assert [r.outcome for r in restore(empty, objects)] == ["created"] * 3
    restored = empty.get(VirtualMachine, "web1")
    assert restored.spec == store.get(VirtualMachine, "web1").spec
    assert restored.metadata.labels == {"app": "web"} and restored.status is None
