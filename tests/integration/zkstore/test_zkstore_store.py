"""The Store facade against a real ZooKeeper: CRUD, apply, CAS, status, placement, epoch."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

from schemas import (
    Network,
    Node,
    ObjectMeta,
    Placement,
    VirtualMachine,
    VirtualMachineStatus,
    VMPhase,
    parse_resource,
)
from zkstore import AlreadyExists, Conflict, EpochMoved, NotFound, Store, parse_selector, paths


def make_vm(name: str = "web", labels: dict[str, str] | None = None, **spec: Any) -> VirtualMachine:
    obj = parse_resource(
        {
            "apiVersion": "pvc/v1",
            "kind": "VirtualMachine",
            "metadata": {"name": name, "labels": labels or {}},
            "spec": {"memory": "1Gi", **spec},
        }
    )
    assert isinstance(obj, VirtualMachine)
    return obj


def znode_exists(store: Store, relative: str) -> bool:
    return store.client.exists(store.path(relative)) is not None


# -- create / get / list -----------------------------------------------------------------


def test_create_then_get_returns_the_object_with_store_owned_metadata(store: Store) -> None:
    created = store.create(make_vm(vcpus=2, labels={"app": "web"}))
    got = store.get(VirtualMachine, "web")
    assert got.spec.vcpus == 2
    assert got.spec.memory == "1Gi"
    assert got.metadata.labels == {"app": "web"}
    assert got.metadata.generation == 1
    assert got.metadata.uid and got.metadata.creation_timestamp
    assert got.metadata.resource_version == created.metadata.resource_version
    assert got.status is None
    assert store.exists(VirtualMachine, "web")
    assert store.names(VirtualMachine) == ["web"]


def test_get_of_a_missing_object_is_not_found(store: Store) -> None:
    with pytest.raises(NotFound, match="VirtualMachine 'ghost' not found"):
        store.get(VirtualMachine, "ghost")


def test_kinds_are_kept_apart(store: Store) -> None:
    store.create(make_vm("shared"))
    assert not store.exists(Node, "shared")
    assert store.list(Node) == []
    assert store.list(Network) == []


def test_list_filters_by_label_selector(store: Store) -> None:
    store.create(make_vm("web2", {"app": "web", "tier": "front"}))
    store.create(make_vm("web1", {"app": "web"}))
    store.create(make_vm("db1", {"app": "db", "tier": "db"}))
    store.create(make_vm("plain"))

    def names(selector: Any = None) -> list[str]:
        return [o.name for o in store.list(VirtualMachine, selector)]

    assert names() == ["db1", "plain", "web1", "web2"]
    assert names("app=web") == ["web1", "web2"]
    assert names("tier!=db") == ["plain", "web1", "web2"]
    assert names("app,!tier") == ["web1"]
    assert names(parse_selector("tier")) == ["db1", "web2"]
    assert names("app=cache") == []


def test_list_includes_status(store: Store) -> None:
    store.create(make_vm())
    store.write_status(VirtualMachine, "web", VirtualMachineStatus(phase=VMPhase.RUNNING))
    [obj] = store.list(VirtualMachine)
    assert obj.status is not None and obj.status.phase == VMPhase.RUNNING


def test_create_twice_is_already_exists_and_keeps_the_first(store: Store) -> None:
    first = store.create(make_vm(vcpus=1))
    with pytest.raises(AlreadyExists, match="VirtualMachine 'web' already exists"):
        store.create(make_vm(vcpus=4))
    again = store.get(VirtualMachine, "web")
    assert again.spec.vcpus == 1
    assert again.metadata.uid == first.metadata.uid
    assert again.metadata.resource_version == first.metadata.resource_version


def test_create_ignores_client_supplied_store_fields(store: Store) -> None:
    vm = make_vm()
    vm.metadata = ObjectMeta(name="web", uid="mine", generation=42, resource_version="7")
    created = store.create(vm)
    assert created.metadata.generation == 1
    assert created.metadata.uid != "mine"


def test_node_fence_password_survives_the_store_but_not_wire(store: Store) -> None:
    node = parse_resource(
        {
            "apiVersion": "pvc/v1",
            "kind": "Node",
            "metadata": {"name": "hv1"},
            "spec": {"fence": {"agent": "ipmi", "address": "10.0.0.9", "password": "hunter2"}},
        }
    )
    store.create(node)
    got = store.get(Node, "hv1")
    assert got.wire()["spec"]["fence"]["password"] == "********"
    # Kept apart from the spec: only reveal (the fencing code's read) puts it back.
    assert got.spec.fence.password is not None
    assert got.spec.fence.password.get_secret_value() == "********"
    revealed = store.reveal(got).spec.fence.password
    assert revealed is not None and revealed.get_secret_value() == "hunter2"
    # Re-applying what was read is a no-op that keeps the secret.
    assert store.apply(got)[1] == "unchanged"
    kept = store.reveal(store.get(Node, "hv1")).spec.fence.password
    assert kept is not None and kept.get_secret_value() == "hunter2"


# -- apply / update ----------------------------------------------------------------------


def test_apply_created_unchanged_then_configured(store: Store) -> None:
    created, outcome = store.apply(make_vm(vcpus=2, labels={"app": "web"}))
    assert outcome == "created"
    assert created.metadata.generation == 1

    same, outcome = store.apply(make_vm(vcpus=2, labels={"app": "web"}))
    assert outcome == "unchanged"
    assert same.metadata.generation == 1
    assert same.metadata.resource_version == created.metadata.resource_version

    changed, outcome = store.apply(make_vm(vcpus=4, labels={"app": "web"}))
    assert outcome == "configured"
    assert changed.metadata.generation == 2
    assert changed.spec.vcpus == 4
    assert changed.metadata.resource_version != created.metadata.resource_version
    assert changed.metadata.uid == created.metadata.uid


def _counting_reads(
    store: Store, monkeypatch: pytest.MonkeyPatch, method: str = "get_async"
) -> list[str]:
    """The paths the store's client reads with ``method`` from here on."""
    seen: list[str] = []
    real = getattr(store.client, method)

    def counted(path: str, *args: Any, **kwargs: Any) -> Any:
        seen.append(path)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(store.client, method, counted)
    return seen


def test_apply_likely_new_creates_without_reading_first(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads = _counting_reads(store, monkeypatch)
    store.apply(make_vm("plain"))
    planned = list(reads)
    reads.clear()
    created, outcome = store.apply(make_vm("hinted", vcpus=2), likely_new=True)
    assert outcome == "created"
    assert created.metadata.generation == 1 and created.metadata.uid
    # The read-back of spec and status only: the plan's read of the spec is skipped.
    assert len(reads) == len(planned) - 1
    assert store.get(VirtualMachine, "hinted").spec.vcpus == 2


def test_apply_likely_new_of_an_object_that_exists_updates_it(store: Store) -> None:
    """A stale hint (another API instance created it; the cache has not seen it yet): the
    transaction's create fails and the apply is planned again from a read."""
    created = store.create(make_vm(vcpus=2))
    same, outcome = store.apply(make_vm(vcpus=2), likely_new=True)
    assert outcome == "unchanged"
    assert same.metadata.resource_version == created.metadata.resource_version
    changed, outcome = store.apply(make_vm(vcpus=4), likely_new=True)
    assert outcome == "configured"
    assert changed.metadata.generation == 2
    assert changed.metadata.uid == created.metadata.uid


def test_apply_of_a_label_only_change_keeps_the_generation(store: Store) -> None:
    created, _ = store.apply(make_vm(vcpus=2, labels={"app": "web"}))
    relabelled, outcome = store.apply(make_vm(vcpus=2, labels={"app": "web", "env": "prod"}))
    assert outcome == "configured"
    assert relabelled.metadata.generation == created.metadata.generation == 1
    assert relabelled.metadata.labels == {"app": "web", "env": "prod"}
    assert relabelled.metadata.resource_version != created.metadata.resource_version
    assert store.get(VirtualMachine, "web").metadata.labels == {"app": "web", "env": "prod"}


def test_apply_of_the_read_back_object_is_unchanged(store: Store) -> None:
    created = store.create(make_vm(disks=[{"name": "root", "size": "10Gi"}]))
    store.write_status(VirtualMachine, "web", VirtualMachineStatus(phase=VMPhase.RUNNING))
    back, outcome = store.apply(store.get(VirtualMachine, "web"))
    assert outcome == "unchanged"
    assert back.metadata.resource_version == created.metadata.resource_version


def test_update_with_current_resource_version_succeeds(store: Store) -> None:
    created = store.create(make_vm(vcpus=1))
    created.spec.vcpus = 3
    updated = store.update(created)
    assert updated.spec.vcpus == 3
    assert updated.metadata.generation == 2


def test_update_with_a_stale_resource_version_is_a_conflict_and_changes_nothing(
    store: Store,
) -> None:
    stale = store.create(make_vm(vcpus=1))
    fresh = store.apply(make_vm(vcpus=2))[0]
    stale.spec.vcpus = 8
    stale.metadata.labels = {"who": "stale"}
    with pytest.raises(Conflict, match="stale"):
        store.update(stale)
    now = store.get(VirtualMachine, "web")
    assert now.spec.vcpus == 2
    assert now.metadata.labels == {}
    assert now.metadata.generation == 2
    assert now.metadata.resource_version == fresh.metadata.resource_version


def test_update_of_a_missing_object_is_not_found(store: Store) -> None:
    with pytest.raises(NotFound):
        store.update(make_vm("ghost"))
    assert not store.exists(VirtualMachine, "ghost")


def test_mutate_spec_reads_changes_and_writes_back(store: Store) -> None:
    store.create(make_vm(vcpus=1))
    after = store.mutate_spec(VirtualMachine, "web", lambda vm: setattr(vm.spec, "vcpus", 6))
    assert after.spec.vcpus == 6
    assert store.get(VirtualMachine, "web").metadata.generation == 2


def test_concurrent_applies_lose_no_update(store: Store, zookeeper: Any, zk_root: str) -> None:
    store.create(make_vm(vcpus=1))
    writers = 6
    # Half the writers share this store's session, half have their own.
    other = Store(zookeeper.hosts, zk_root, timeout=6.0)
    other.start()
    try:
        barrier = threading.Barrier(writers)
        outcomes: list[str] = []
        errors: list[BaseException] = []

        def writer(i: int) -> None:
            target = store if i % 2 else other
            try:
                barrier.wait(timeout=10)
                outcomes.append(target.apply(make_vm(vcpus=10 + i))[1])
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=writer, args=(i,)) for i in range(writers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert errors == []
        assert outcomes == ["configured"] * writers
        final = store.get(VirtualMachine, "web")
        assert final.metadata.generation == 1 + writers
        assert final.spec.vcpus in {10 + i for i in range(writers)}
    finally:
        other.stop()


# -- delete ------------------------------------------------------------------------------


def test_delete_removes_spec_status_placement_and_node_index(store: Store) -> None:
    store.create(make_vm())
    store.create(make_vm("other"))
    store.write_status(VirtualMachine, "web", VirtualMachineStatus(phase=VMPhase.RUNNING))
    store.write_placement("web", Placement(node="hv1", reason="scheduled"), epoch=None)
    store.write_placement("other", Placement(node="hv1", reason="scheduled"), epoch=None)
    assert set(store.node_index("hv1")) == {"web", "other"}

    store.delete(VirtualMachine, "web")

    assert not store.exists(VirtualMachine, "web")
    assert not znode_exists(store, paths.status("vms", "web"))
    assert not znode_exists(store, paths.placement("web"))
    assert not znode_exists(store, paths.node_index_entry("hv1", "web"))
    assert set(store.node_index("hv1")) == {"other"}
    assert store.read_placement("other") is not None
    with pytest.raises(NotFound):
        store.get(VirtualMachine, "web")


def test_delete_then_recreate_starts_fresh(store: Store) -> None:
    first = store.create(make_vm(vcpus=1))
    store.write_status(VirtualMachine, "web", VirtualMachineStatus(phase=VMPhase.FAILED))
    store.delete(VirtualMachine, "web")
    again, outcome = store.apply(make_vm(vcpus=1))
    assert outcome == "created"
    assert again.metadata.generation == 1
    assert again.metadata.uid != first.metadata.uid
    assert again.status is None


def test_delete_of_a_missing_object_is_not_found(store: Store) -> None:
    with pytest.raises(NotFound, match="'ghost' not found"):
        store.delete(VirtualMachine, "ghost")


def test_delete_with_a_stale_resource_version_is_a_conflict(store: Store) -> None:
    stale = store.create(make_vm(vcpus=1))
    store.apply(make_vm(vcpus=2))
    with pytest.raises(Conflict):
        store.delete(VirtualMachine, "web", resource_version=stale.metadata.resource_version)
    assert store.exists(VirtualMachine, "web")
    current = store.get(VirtualMachine, "web").metadata.resource_version
    store.delete(VirtualMachine, "web", resource_version=current)
    assert not store.exists(VirtualMachine, "web")


# -- status ------------------------------------------------------------------------------


def test_write_status_on_a_missing_object_is_not_found(store: Store) -> None:
    with pytest.raises(NotFound):
        store.write_status(VirtualMachine, "ghost", VirtualMachineStatus())
    assert not znode_exists(store, paths.resource("vms", "ghost"))


def test_status_write_leaves_spec_resource_version_and_generation_alone(store: Store) -> None:
    created = store.create(make_vm())
    store.write_status(
        VirtualMachine, "web", VirtualMachineStatus(phase=VMPhase.STARTING, observed_generation=1)
    )
    store.write_status(
        VirtualMachine, "web", VirtualMachineStatus(phase=VMPhase.RUNNING, node="hv1")
    )
    got = store.get(VirtualMachine, "web")
    assert got.metadata.resource_version == created.metadata.resource_version
    assert got.metadata.generation == 1
    assert got.status is not None
    assert (got.status.phase, got.status.node) == (VMPhase.RUNNING, "hv1")
    # The second write replaced the first one; it did not merge into it.
    assert got.status.observed_generation is None
    assert store.read_status(VirtualMachine, "web")["phase"] == "Running"
    # ... and a user's CAS update from before the status writes still goes through.
    created.spec.vcpus = 2
    assert store.update(created).metadata.generation == 2


# -- placement and epoch -----------------------------------------------------------------


def test_write_placement_moves_the_node_index_entry(store: Store) -> None:
    store.create(make_vm())
    store.write_placement("web", Placement(node="hv1", reason="scheduled"), epoch=None)
    assert list(store.node_index("hv1")) == ["web"]
    assert store.node_index("hv2") == {}

    store.write_placement(
        "web", Placement(node="hv2", reason="migrate", migration="live"), epoch=None
    )
    assert store.node_index("hv1") == {}
    entry = store.node_index("hv2")["web"]
    assert (entry.node, entry.reason, entry.migration) == ("hv2", "migrate", "live")
    placement = store.read_placement("web")
    assert placement is not None and placement.node == "hv2"

    store.write_placement("web", Placement(node="hv2", reason="settled"), epoch=None)
    assert store.node_index("hv2")["web"].reason == "settled"

    store.write_placement("web", Placement(node=None, reason="stopped"), epoch=None)
    assert store.node_index("hv2") == {}
    placement = store.read_placement("web")
    assert placement is not None and placement.node is None


def test_placement_is_not_part_of_the_spec(store: Store) -> None:
    created = store.create(make_vm())
    store.write_placement("web", Placement(node="hv1"), epoch=None)
    got = store.get(VirtualMachine, "web")
    assert got.metadata.resource_version == created.metadata.resource_version
    assert store.apply(make_vm())[1] == "unchanged"


def test_write_placement_for_a_missing_vm_is_not_found(store: Store) -> None:
    with pytest.raises(NotFound):
        store.write_placement("ghost", Placement(node="hv1"), epoch=None)
    assert store.node_index("hv1") == {}


def test_write_placement_with_a_stale_epoch_is_refused(store: Store) -> None:
    store.create(make_vm())
    epoch = store.read_epoch()
    store.write_placement("web", Placement(node="hv1", epoch=epoch), epoch=epoch)
    assert list(store.node_index("hv1")) == ["web"]

    new_epoch = store.bump_epoch("hv2")
    assert new_epoch == epoch + 1
    assert store.read_epoch(sync=True) == new_epoch

    with pytest.raises(EpochMoved):
        store.write_placement("web", Placement(node="hv3", epoch=epoch), epoch=epoch)
    placement = store.read_placement("web")
    assert placement is not None and placement.node == "hv1"
    assert list(store.node_index("hv1")) == ["web"]
    assert store.node_index("hv3") == {}

    store.write_placement("web", Placement(node="hv3", epoch=new_epoch), epoch=new_epoch)
    assert list(store.node_index("hv3")) == ["web"]
    assert store.node_index("hv1") == {}


def test_first_placement_with_a_stale_epoch_creates_nothing(store: Store) -> None:
    store.create(make_vm())
    stale = store.read_epoch()
    store.bump_epoch("hv2")
    with pytest.raises(EpochMoved):
        store.write_placement("web", Placement(node="hv1"), epoch=stale)
    assert store.read_placement("web") is None
    assert store.node_index("hv1") == {}


def test_marking_a_deletion_returns_the_marked_vm_though_its_node_removed_it_at_once(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On the test driver a node shuts down, undefines and finalizes within milliseconds:
    the object may be gone before the marking reads it back. The DELETE that marked it must
    not answer 404 (seen in CI)."""
    store.create(make_vm("quick"))
    path = store.path(paths.resource(VirtualMachine.PLURAL, "quick"))
    set_znode = store.client.set

    def set_then_its_node_finishes(znode: str, value: bytes, version: int = -1) -> Any:
        stat = set_znode(znode, value, version=version)
        if znode == path:
            store.client.delete(path)
        return stat

    monkeypatch.setattr(store.client, "set", set_then_its_node_finishes)
    marked = store.mark_deleting(VirtualMachine, "quick")
    assert marked.name == "quick" and marked.deleting
    assert not store.exists(VirtualMachine, "quick")


def test_update_status_with_what_it_last_wrote_skips_the_read_until_another_writer_wrote(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A node's heartbeat passes the status it last wrote: no read before the write. When
    another writer (the primary's drain) wrote in between, the compare-and-set fails, the
    status is read again, and the other writer's field is carried over, not undone."""
    store.create(make_vm("web"))
    reads = _counting_reads(store, monkeypatch, "get")

    def beat(reason: str) -> Callable[[Any], VirtualMachineStatus]:
        def change(previous: Any) -> VirtualMachineStatus:
            return VirtualMachineStatus(reason=reason, node=(previous or {}).get("node"))

        return change

    written = store.update_status(VirtualMachine, "web", beat("one"))
    assert written is not None and len(reads) == 1  # nothing known yet: read once
    written = store.update_status(VirtualMachine, "web", beat("two"), known=written)
    assert len(reads) == 1  # what it wrote last went first: no read
    store.update_status(VirtualMachine, "web", lambda _: VirtualMachineStatus(node="n9"))
    reads.clear()
    written = store.update_status(VirtualMachine, "web", beat("three"), known=written)
    assert len(reads) == 1  # the other write failed the check: read, then written
    stored = store.read_status(VirtualMachine, "web") or {}
    assert (stored.get("reason"), stored.get("node")) == ("three", "n9")
    assert written is not None and written[0] == stored and written[1] == 3
