"""zkstore.KindWatch, the API cache's source: it follows creates, changes, status, deletes,
re-creates, churn from another client, and a lost session."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from localcluster.zookeeper import ZooKeeperServer
from schemas import VirtualMachine, VirtualMachineStatus, VMPhase, parse_resource
from tests.helpers import session_lost, wait_for
from zkstore import Store
from zkstore.kindwatch import KindWatch


def make_vm(name: str, vcpus: int = 1) -> VirtualMachine:
    obj = parse_resource(
        {
            "apiVersion": "pvc/v1",
            "kind": "VirtualMachine",
            "metadata": {"name": name},
            "spec": {"memory": "1Gi", "vcpus": vcpus},
        }
    )
    assert isinstance(obj, VirtualMachine)
    return obj


class Keys:
    def __init__(self) -> None:
        self.seen: list[str] = []
        self._lock = threading.Lock()

    def __call__(self, key: str) -> None:
        with self._lock:
            self.seen.append(key)


@pytest.fixture
def watched(store: Store) -> Iterator[tuple[KindWatch, Keys]]:
    keys = Keys()
    watch = KindWatch(store, "vms", keys)
    watch.start(30)
    yield watch, keys
    watch.close()


def vcpus(watch: KindWatch, name: str) -> int | None:
    found = watch.snapshot(name)
    return None if found is None else int(found[0]["spec"]["vcpus"])


def phase(watch: KindWatch, name: str) -> str | None:
    found = watch.snapshot(name)
    return None if found is None or found[2] is None else str(found[2]["phase"])


def test_loads_what_exists_and_follows_every_change(store: Store) -> None:
    store.create(make_vm("before"))
    store.write_status(VirtualMachine, "before", VirtualMachineStatus(phase=VMPhase.RUNNING))
    keys = Keys()
    watch = KindWatch(store, "vms", keys)
    watch.start(30)
    try:
        assert (vcpus(watch, "before"), phase(watch, "before")) == (1, "Running")
        snap = watch.snapshot("before")
        assert snap is not None and snap[1] == int(
            store.get(VirtualMachine, "before").metadata.resource_version or 0
        )
        store.create(make_vm("a"))
        wait_for(lambda: vcpus(watch, "a") == 1, 10, "a created")
        store.update(make_vm("a", vcpus=2))
        wait_for(lambda: vcpus(watch, "a") == 2, 10, "a changed")
        store.write_status(VirtualMachine, "a", VirtualMachineStatus(phase=VMPhase.STARTING))
        wait_for(lambda: phase(watch, "a") == "Starting", 10, "a status appeared")
        store.write_status(VirtualMachine, "a", VirtualMachineStatus(phase=VMPhase.RUNNING))
        wait_for(lambda: phase(watch, "a") == "Running", 10, "a status changed")
        store.delete(VirtualMachine, "a")
        wait_for(lambda: watch.snapshot("a") is None, 10, "a deleted")
        store.create(make_vm("a", vcpus=3))
        wait_for(lambda: vcpus(watch, "a") == 3 and phase(watch, "a") is None, 10, "a re-created")
        assert watch.names() == ["a", "before"]
        assert "a" in keys.seen
    finally:
        watch.close()


def test_churn_from_another_client_ends_equal_to_the_store(
    store: Store, zookeeper: ZooKeeperServer, watched: tuple[KindWatch, Keys]
) -> None:
    watch, _ = watched
    writer = Store(zookeeper.hosts, store.root, timeout=6.0)
    writer.start()
    try:
        for i in range(30):
            writer.apply(make_vm(f"c{i % 7}", vcpus=i % 5 + 1))
            victim = f"c{(i + 3) % 7}"
            if i % 4 == 0 and writer.exists(VirtualMachine, victim):
                writer.delete(VirtualMachine, victim)
        truth = {o.name: o.spec.vcpus for o in writer.list(VirtualMachine)}
    finally:
        writer.stop()
    wait_for(lambda: {n: vcpus(watch, n) for n in watch.names()} == truth, 10, "the watch to agree")


def test_a_lost_session_reloads_everything(
    store: Store, zookeeper: ZooKeeperServer, watched: tuple[KindWatch, Keys]
) -> None:
    watch, _ = watched
    store.create(make_vm("stays"))
    store.create(make_vm("goes"))
    wait_for(lambda: watch.names() == ["goes", "stays"], 10, "both loaded")
    # Expire the session: every watch is gone.
    with session_lost(store, zookeeper.hosts) as other:
        other.delete(VirtualMachine, "goes")
        other.create(make_vm("new"))
        other.update(make_vm("stays", vcpus=4))
    wait_for(
        lambda: watch.names() == ["new", "stays"] and vcpus(watch, "stays") == 4,
        30,
        "the watch to reload after the session came back",
    )
