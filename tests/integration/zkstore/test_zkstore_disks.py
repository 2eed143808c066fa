"""Create-once disk records (zkstore/disks.py) across real ZooKeeper sessions: one creator
under a race, and what the others see of a creator that died half-way."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from zkstore import DiskRecordLost, Disks, Store, paths


@pytest.fixture
def other_store(zookeeper: Any, zk_root: str) -> Iterator[Store]:
    """A second node's view: same root, its own ZooKeeper session."""
    other = Store(zookeeper.hosts, zk_root, timeout=6.0)
    other.start()
    yield other
    other.stop()


def test_two_nodes_racing_create_one_record_and_both_see_the_winner(
    store: Store, other_store: Store
) -> None:
    for round_ in range(10):
        vm = f"vm{round_}"
        barrier = threading.Barrier(4)
        seen: dict[str, str] = {}

        def begin(
            node: str,
            s: Store,
            vm: str = vm,
            barrier: threading.Barrier = barrier,
            seen: dict[str, str] = seen,
        ) -> None:
            barrier.wait()
            record = Disks(s).begin(vm, "root", node, f"/disks/{node}/{vm}-root.qcow2", None)
            seen[node] = record.node

        threads = [
            threading.Thread(target=begin, args=(f"n{i}", (store, other_store)[i % 2]))
            for i in range(4)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert len(seen) == 4
        winners = set(seen.values())
        assert len(winners) == 1, seen
        record = Disks(store).read(vm, "root")
        assert record is not None
        assert (record.node, record.state) == (winners.pop(), "creating")


def test_finish_marks_created_and_a_later_begin_returns_it(store: Store) -> None:
    disks = Disks(store)
    mine = disks.begin("vm1", "data", "n1", "/shared/vm1-data.qcow2", "/shared")
    assert (mine.node, mine.state, mine.shared) == ("n1", "creating", "/shared")
    done = disks.finish("vm1", "data", "n1")
    assert done.created
    again = disks.begin("vm1", "data", "n2", "/shared/vm1-data.qcow2", "/shared")
    assert (again.node, again.state) == ("n1", "created")
    assert disks.of("vm1") == {"data": done}
    assert disks.of("absent") == {}


def test_a_creating_record_of_a_dead_node_stays_its_own(
    store: Store, zookeeper: Any, zk_root: str
) -> None:
    dead = Store(zookeeper.hosts, zk_root, timeout=6.0)
    dead.start()
    Disks(dead).begin("vm1", "root", "n1", "/n1/vm1-root.qcow2", None)
    dead.stop()  # died half-way: the record is not ephemeral, it stays

    disks = Disks(store)
    # Another node gets the dead node's record back and must not create anything.
    seen = disks.begin("vm1", "root", "n2", "/n2/vm1-root.qcow2", None)
    assert (seen.node, seen.state, seen.path) == ("n1", "creating", "/n1/vm1-root.qcow2")
    with pytest.raises(DiskRecordLost):
        disks.finish("vm1", "root", "n2")
    # The creator, back, finds its own record: it creates again and finishes.
    back = disks.begin("vm1", "root", "n1", "/n1/vm1-root.qcow2", None)
    assert (back.node, back.state) == ("n1", "creating")
    assert disks.finish("vm1", "root", "n1").created


def test_an_operator_removing_a_creating_record_hands_creation_on(store: Store) -> None:
    disks = Disks(store)
    disks.begin("vm1", "root", "n1", "/n1/vm1-root.qcow2", None)
    store.client.delete(store.path(paths.disk_record("vm1", "root")))
    with pytest.raises(DiskRecordLost):
        disks.finish("vm1", "root", "n1")  # n1 came back late: its image is not the disk
    won = disks.begin("vm1", "root", "n2", "/n2/vm1-root.qcow2", None)
    assert (won.node, won.state) == ("n2", "creating")


def test_reach_is_the_creator_or_the_same_shared_folder(store: Store) -> None:
    disks = Disks(store)
    own = disks.begin("vm1", "root", "n1", "/n1/vm1-root.qcow2", None)
    assert own.reached_by("n1", "/n1", False)
    assert not own.reached_by("n2", "/n1", True)  # n1's folder was not declared shared
    shared = disks.begin("vm2", "root", "n1", "/s/vm2-root.qcow2", "/s")
    assert shared.reached_by("n2", "/s", True)
    assert not shared.reached_by("n2", "/s", False)
    assert not shared.reached_by("n2", "/other", True)
