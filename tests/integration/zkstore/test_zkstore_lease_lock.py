"""Ephemeral leases and exclusive locks, across two real ZooKeeper sessions."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from tests.helpers import wait_for
from zkstore import Lease, LeaseHeld, Store, exclusive_lock, paths

LEASE = paths.node_lease("hv1")


@pytest.fixture
def second_store(zookeeper: Any, zk_root: str) -> Iterator[Store]:
    """Another process's view: same root, its own ZooKeeper session."""
    other = Store(zookeeper.hosts, zk_root, timeout=6.0)
    other.start()
    yield other
    other.stop()


def test_acquire_creates_an_ephemeral_znode_of_this_session(store: Store) -> None:
    lease = Lease(store, LEASE, {"node": "hv1"})
    assert not lease.held
    assert lease.holder() is None
    lease.acquire(wait=1.0)
    assert lease.held
    stat = store.client.exists(store.path(LEASE))
    assert stat is not None
    assert stat.ephemeralOwner == store.client.client_id[0]
    assert lease.holder() == {"node": "hv1"}


def test_acquire_again_in_the_same_session_is_a_no_op(store: Store) -> None:
    Lease(store, LEASE, {"node": "hv1"}).acquire(wait=1.0)
    again = Lease(store, LEASE, {"node": "hv1"})
    again.acquire(wait=0.2)
    assert again.held


def test_a_second_session_cannot_take_a_held_lease(store: Store, second_store: Store) -> None:
    Lease(store, LEASE, {"node": "hv1", "pid": 1}).acquire(wait=1.0)
    rival = Lease(second_store, LEASE, {"node": "hv1", "pid": 2})
    with pytest.raises(LeaseHeld, match="'pid': 1"):
        rival.acquire(wait=0.3)
    assert not rival.held
    assert rival.holder() == {"node": "hv1", "pid": 1}


def test_the_lease_passes_on_when_its_holder_stops(
    zookeeper: Any, zk_root: str, second_store: Store
) -> None:
    first = Store(zookeeper.hosts, zk_root, timeout=6.0)
    first.start()
    try:
        Lease(first, LEASE, {"pid": 1}).acquire(wait=1.0)
        rival = Lease(second_store, LEASE, {"pid": 2})
        with pytest.raises(LeaseHeld):
            rival.acquire(wait=0.2)
    finally:
        first.stop()  # closes the session: its ephemeral lease goes at once
    rival.acquire(wait=10.0)
    assert rival.held
    assert rival.holder() == {"pid": 2}
    stat = second_store.client.exists(second_store.path(LEASE))
    assert stat is not None and stat.ephemeralOwner == second_store.client.client_id[0]


def test_acquire_keeps_trying_until_the_holder_releases(
    store: Store, second_store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    held = Lease(store, LEASE, {"pid": 1})
    held.acquire(wait=1.0)
    rival = Lease(second_store, LEASE, {"pid": 2})
    failures: list[BaseException] = []

    def take() -> None:
        try:
            rival.acquire(wait=15.0)
        except BaseException as exc:
            failures.append(exc)

    caplog.set_level(logging.INFO, logger="zkstore.lease")
    taker = threading.Thread(target=take)
    taker.start()
    try:
        wait_for(lambda: "event=lease_wait" in caplog.text, 10, "the rival to find it held")
        assert not rival.held
        held.release()
    finally:
        taker.join(20)
    assert failures == []
    assert rival.held
    assert rival.holder() == {"pid": 2}


def test_release_deletes_the_lease_so_another_can_take_it(
    store: Store, second_store: Store
) -> None:
    lease = Lease(store, LEASE, {"pid": 1})
    lease.acquire(wait=1.0)
    lease.release()
    assert not lease.held
    assert store.client.exists(store.path(LEASE)) is None
    Lease(second_store, LEASE, {"pid": 2}).acquire(wait=1.0)


def test_release_by_a_non_holder_leaves_the_holders_lease(
    store: Store, second_store: Store
) -> None:
    Lease(store, LEASE, {"pid": 1}).acquire(wait=1.0)
    rival = Lease(second_store, LEASE, {"pid": 2})
    with pytest.raises(LeaseHeld):
        rival.acquire(wait=0.2)
    rival.release()
    stat = store.client.exists(store.path(LEASE))
    assert stat is not None and stat.ephemeralOwner == store.client.client_id[0]


def test_exclusive_lock_is_held_by_one_session_at_a_time(store: Store, second_store: Store) -> None:
    mine = exclusive_lock(store, "migrations", "hv1")
    theirs = exclusive_lock(second_store, "migrations", "hv2")
    assert mine.acquire(blocking=False)
    try:
        assert not theirs.acquire(blocking=False)
        assert mine.contenders() == ["hv1"]
    finally:
        mine.release()
    assert theirs.acquire(blocking=False)
    try:
        assert not mine.acquire(blocking=False)
    finally:
        theirs.release()


def test_exclusive_lock_is_freed_when_its_holder_stops(
    zookeeper: Any, zk_root: str, second_store: Store
) -> None:
    first = Store(zookeeper.hosts, zk_root, timeout=6.0)
    first.start()
    try:
        assert exclusive_lock(first, "schema").acquire(blocking=False)
        theirs = exclusive_lock(second_store, "schema")
        assert not theirs.acquire(blocking=False)
    finally:
        first.stop()
    assert theirs.acquire(timeout=10)
    theirs.release()


def test_different_lock_names_do_not_exclude_each_other(store: Store, second_store: Store) -> None:
    a = exclusive_lock(store, "a")
    b = exclusive_lock(second_store, "b")
    assert a.acquire(blocking=False)
    assert b.acquire(blocking=False)
    a.release()
    b.release()
