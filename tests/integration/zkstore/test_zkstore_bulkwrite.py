"""The bulk apply (zkstore/bulkwrite.py) against a real ZooKeeper: what it stores is what as
many single applies store; created, configured and unchanged objects in one call; races
with another writer come out as in a single apply; secrets; a failure mid-way."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from localcluster.zookeeper import ZooKeeperServer
from schemas import Node, Resource, VirtualMachine, parse_resource
from schemas.node import SECRET_MASK
from schemas.resource import SECRET_DIGESTS
from tests.integration.zkstore.bulk_helpers import between_read_and_write
from zkstore import AlreadyExists, Conflict, NotFound, Store, Unavailable, bulkwrite, paths
from zkstore.codec import decode

STOPS = (Conflict, AlreadyExists, NotFound, Unavailable)


def vm(name: str, **spec: Any) -> Resource:
    return parse_resource(
        {
            "apiVersion": "pvc/v1",
            "kind": "VirtualMachine",
            "metadata": {"name": name, "labels": {"app": "bulk"}, "annotations": {"a": name}},
            "spec": {"memory": "64Mi", **spec},
        }
    )


def fenced(name: str, password: str) -> Resource:
    fence = {"agent": "ipmi", "address": "10.0.0.9", "user": "root", "password": password}
    return parse_resource(
        {
            "apiVersion": "pvc/v1",
            "kind": "Node",
            "metadata": {"name": name},
            "spec": {"fence": fence},
        }
    )


def apply_all(store: Store, objs: list[Resource]) -> list[bulkwrite.Applied]:
    return list(bulkwrite.apply_all(store, objs, STOPS))


def stored_raw(store: Store, plural: str, name: str) -> dict[str, Any]:
    data, _ = store.client.get(store.path(paths.resource(plural, name)))
    raw: dict[str, Any] = decode(data)
    return raw


def without_identity(raw: dict[str, Any]) -> dict[str, Any]:
    """The stored form but for what differs between any two writes (uid, the time)."""
    meta = {k: v for k, v in raw["metadata"].items() if k not in ("uid", "creationTimestamp")}
    return {**raw, "metadata": meta}


def running(store: Store) -> Iterator[Store]:
    store.start()
    try:
        yield store
    finally:
        store.stop()


@pytest.fixture
def other(zookeeper: ZooKeeperServer, zk_root: str) -> Iterator[Store]:
    """Another client on the same root: the other writer of a race."""
    yield from running(Store(zookeeper.hosts, zk_root, timeout=6.0))


@pytest.fixture
def elsewhere(zookeeper: ZooKeeperServer) -> Iterator[Store]:
    """A store on a root of its own, for single applies to compare with."""
    yield from running(Store(zookeeper.hosts, f"/test-{uuid.uuid4().hex[:12]}", timeout=6.0))


def test_200_vms_are_stored_as_200_single_applies_store_them(
    store: Store, elsewhere: Store
) -> None:
    objs = [vm(f"vm-{i:03d}", vcpus=1 + i % 3) for i in range(200)]
    applied = apply_all(store, objs)
    assert [a.position for a in applied] == list(range(200))
    assert {a.outcome for a in applied} == {"created"}
    for obj in objs:
        elsewhere.apply(obj)
    for a, obj in zip(applied, objs, strict=True):
        raw = stored_raw(store, "vms", obj.name)
        assert without_identity(raw) == without_identity(stored_raw(elsewhere, "vms", obj.name))
        got = store.get(VirtualMachine, obj.name)
        # What the bulk apply reports is what is stored.
        assert a.stored.metadata.resource_version == got.metadata.resource_version
        assert a.stored.metadata.uid == got.metadata.uid == raw["metadata"]["uid"]
        assert a.stored.metadata.generation == 1 and a.stored.spec == got.spec
    assert len({a.stored.metadata.uid for a in applied}) == 200


def test_created_configured_and_unchanged_objects_in_one_apply(store: Store) -> None:
    for i in range(30):
        store.apply(vm(f"vm-{i:03d}"))
    before = {v.name: v for v in store.list(VirtualMachine)}
    objs = [vm(f"vm-{i:03d}", vcpus=4 if i < 10 else 1) for i in range(100)]
    applied = apply_all(store, objs)
    outcomes = [a.outcome for a in applied]
    assert outcomes == ["configured"] * 10 + ["unchanged"] * 20 + ["created"] * 70
    for a in applied:
        got = store.get(VirtualMachine, a.stored.name)
        assert a.stored.metadata.resource_version == got.metadata.resource_version
        assert a.stored.metadata.generation == got.metadata.generation
        assert got.spec.vcpus == (4 if a.stored.name < "vm-010" else 1)
        if a.outcome == "configured":
            assert got.metadata.generation == 2
            assert got.metadata.uid == before[got.name].metadata.uid
        if a.outcome == "unchanged":
            assert got.metadata.resource_version == before[got.name].metadata.resource_version
    # The same apply again changes nothing.
    assert {a.outcome for a in apply_all(store, objs)} == {"unchanged"}


def test_an_object_created_meanwhile_is_updated_as_an_apply_updates_it(
    store: Store, other: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The transaction of the group's creates fails on the one that exists now: each is
    then written alone, and that one becomes an update of the other writer's object."""
    objs = [vm(f"vm-{i:03d}", vcpus=2) for i in range(80)]
    between_read_and_write(monkeypatch, "vm-010", lambda: other.create(vm("vm-010", vcpus=7)))
    applied = apply_all(store, objs)
    outcomes = {a.stored.name: a.outcome for a in applied}
    assert outcomes.pop("vm-010") == "configured"
    assert set(outcomes.values()) == {"created"} and len(outcomes) == 79
    raced = store.get(VirtualMachine, "vm-010")
    assert raced.spec.vcpus == 2 and raced.metadata.generation == 2  # this apply's, on top
    assert all(v.spec.vcpus == 2 for v in store.list(VirtualMachine))
    assert len(store.names(VirtualMachine)) == 80


def test_an_object_changed_meanwhile_is_planned_again_or_refused_when_pinned(
    store: Store, other: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("a", "b"):
        store.apply(vm(name))

    def bump(obj: VirtualMachine) -> None:
        obj.metadata.labels["by"] = "other"

    # Not pinned: planned again on what the other writer stored, nothing of it lost.
    between_read_and_write(monkeypatch, "a", lambda: other.mutate_spec(VirtualMachine, "a", bump))
    [applied] = apply_all(store, [vm("a", vcpus=3)])
    assert applied.outcome == "configured"
    got = store.get(VirtualMachine, "a")
    assert (
        got.spec.vcpus == 3
        and got.metadata.resource_version == applied.stored.metadata.resource_version
    )
    # Pinned to the version read: refused (a stale resourceVersion), the rest written.
    pinned = vm("b", vcpus=3)
    pinned.metadata.resource_version = store.get(VirtualMachine, "b").metadata.resource_version
    between_read_and_write(monkeypatch, "b", lambda: other.mutate_spec(VirtualMachine, "b", bump))
    with pytest.raises(bulkwrite.Stopped) as stopped:
        apply_all(store, [vm("c"), pinned, vm("d")])
    [(position, error)] = stopped.value.failed
    assert position == 1 and isinstance(error, Conflict) and list(stopped.value.rest) == []
    assert store.get(VirtualMachine, "b").spec.vcpus == 1  # the other writer's, kept
    assert store.names(VirtualMachine) == ["a", "b", "c", "d"]


def test_secrets_in_a_bulk_apply_are_stored_apart_with_their_digests(store: Store) -> None:
    """Nodes with fence passwords among VMs (a password's digest is slow by design: a few)."""
    nodes = {i: fenced(f"hv{i:02d}", f"pw-{i}") for i in range(0, 60, 10)}
    objs = [nodes.get(i) or vm(f"vm-{i:02d}") for i in range(60)]
    assert {a.outcome for a in apply_all(store, objs)} == {"created"}
    for i, obj in nodes.items():
        raw = stored_raw(store, "nodes", obj.name)
        assert raw["spec"]["fence"]["password"] == SECRET_MASK and raw[SECRET_DIGESTS]
        assert store.client.exists(store.path(paths.secret("nodes", obj.name))) is not None
        got = store.get(Node, obj.name)
        assert got.spec.fence.password is not None
        assert got.spec.fence.password.get_secret_value() == SECRET_MASK  # masked on read
        revealed = store.reveal(got).spec.fence.password
        assert revealed is not None and revealed.get_secret_value() == f"pw-{i}"
    # The same passwords: unchanged (told by the digests); a new one: configured.
    objs[10] = fenced("hv10", "new")
    outcomes = [a.outcome for a in apply_all(store, objs)]
    assert outcomes == ["unchanged"] * 10 + ["configured"] + ["unchanged"] * 49
    password = store.reveal(store.get(Node, "hv10")).spec.fence.password
    assert password is not None and password.get_secret_value() == "new"


def test_a_failure_mid_way_stops_after_its_group_and_says_what_was_not_written(
    store: Store,
) -> None:
    store.apply(vm("vm-060"))
    stale = vm("vm-060", vcpus=5)
    stale.metadata.resource_version = "1"  # not the stored version
    objs = [vm(f"vm-{i:03d}") for i in range(120)]
    objs[60] = stale
    written = []
    with pytest.raises(bulkwrite.Stopped) as stopped:
        for applied in bulkwrite.apply_all(store, objs, STOPS):
            written.append(applied.position)
    [(position, error)] = stopped.value.failed
    assert position == 60 and isinstance(error, Conflict)
    segment_end = 2 * bulkwrite.SEGMENT
    assert list(stopped.value.rest) == list(range(segment_end, 120))
    assert written == [p for p in range(segment_end) if p != 60]
    # What it said is what the store holds.
    assert store.names(VirtualMachine) == sorted(objs[p].name for p in range(segment_end))
    assert store.get(VirtualMachine, "vm-060").spec.vcpus == 1


def test_a_big_object_after_many_small_ones_goes_in_a_transaction_of_its_own(
    store: Store,
) -> None:
    # 49 objects of ~4 KB then one of ~850 KB in one segment: in one transaction they would
    # pass ZooKeeper's 1 MB request limit, and the server would drop the connection.
    def annotated(name: str, size: int) -> Resource:
        obj = vm(name)
        obj.metadata.annotations["blob"] = "x" * size
        return obj

    objs = [annotated(f"small{i:02d}", 4_000) for i in range(49)] + [annotated("big", 850_000)]
    applied = apply_all(store, objs)
    assert [a.outcome for a in applied] == ["created"] * 50
    assert len(stored_raw(store, "vms", "big")["metadata"]["annotations"]["blob"]) == 850_000
    assert len(store.names(VirtualMachine)) == 50
