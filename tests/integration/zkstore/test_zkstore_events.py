"""zkstore/events.py against a real ZooKeeper: the log stays bounded, newest kept."""

from __future__ import annotations

import gc
import logging
import threading
import weakref

import pytest

from localcluster.zookeeper import ZooKeeperServer
from tests.helpers import wait_for
from zkstore import Store, paths
from zkstore.events import EventLog


def test_the_log_keeps_the_newest_entries_within_its_limit(store: Store) -> None:
    log = EventLog(store, limit=40, trim_every=10)
    for i in range(150):
        log.record("VirtualMachine", f"vm{i}", "Created", f"created {i}")
    events_dir = store.path(paths.EVENTS)
    # Appends and trims run in the background: wait for the last event to land, then for
    # the trim after it.
    wait_for(lambda: [e.name for e in log.list(limit=1)] == ["vm149"], 10, "the 150th event")
    wait_for(
        lambda: len(store.client.get_children(events_dir)) <= 40 + 10,
        10,
        "at most 50 events kept, limit 40 (+10 between trims)",
    )
    newest = log.list(limit=5)
    assert [e.name for e in newest] == [f"vm{i}" for i in range(145, 150)]


def test_concurrent_trims_do_not_fail_or_overdelete(store: Store) -> None:
    log = EventLog(store, limit=30, trim_every=1000)
    for i in range(80):
        log.record("Node", f"n{i}", "Ready", "ready")
    events_dir = store.path(paths.EVENTS)
    # The creates go out in order on one session: the last one there means all are.
    wait_for(lambda: [e.name for e in log.list(limit=1)] == ["n79"], 10, "the 80th event")
    trims = [threading.Thread(target=log.trim) for _ in range(4)]
    for t in trims:
        t.start()
    for t in trims:
        t.join(10)
    log.trim()  # runs, or makes the trim running now go round again
    wait_for(lambda: len(store.client.get_children(events_dir)) == 30, 10, "30 events kept")
    assert [e.name for e in log.list(limit=30)] == [f"n{i}" for i in range(50, 80)]


def test_a_burst_of_events_goes_out_in_few_commits_and_in_order(store: Store) -> None:
    """Events recorded while an append is in flight go together in one transaction: a
    burst from 4 threads costs far fewer commits (zxids) than events, and each thread's
    events keep the order it recorded them in."""
    log = EventLog(store, limit=10_000, trim_every=10_000)

    def burst(thread: int) -> None:
        for i in range(100):
            log.record("VirtualMachine", f"t{thread}-{i:03d}", "Created", "burst")

    threads = [threading.Thread(target=burst, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    events_dir = store.path(paths.EVENTS)
    wait_for(lambda: len(store.client.get_children(events_dir)) == 400, 10, "400 events")
    events = log.list(limit=400)
    for thread in range(4):
        mine = [e.name for e in events if e.name.startswith(f"t{thread}-")]
        assert mine == [f"t{thread}-{i:03d}" for i in range(100)]
    zxids = {
        store.client.exists(f"{events_dir}/{child}").czxid
        for child in store.client.get_children(events_dir)
    }
    assert len(zxids) <= 400 // 4, f"{len(zxids)} commits for 400 events"


def test_a_failed_append_is_logged_and_later_events_still_land(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    log = EventLog(store)
    log.record("Node", "n0", "Ready", "first")
    wait_for(lambda: [e.name for e in log.list(limit=1)] == ["n0"], 10, "the first event")
    events_dir = store.path(paths.EVENTS)
    store.client.delete(events_dir, recursive=True)  # the next append fails: no parent
    with caplog.at_level(logging.WARNING, logger="zkstore.events"):
        log.record("Node", "n1", "Ready", "lost")
        wait_for(
            lambda: "event=event_log_failed kind=Node name=n1" in caplog.text,
            10,
            "the failed append logged",
        )
    store.client.ensure_path(events_dir)
    log.record("Node", "n2", "Ready", "after")
    wait_for(lambda: [e.name for e in log.list(limit=5)] == ["n2"], 10, "the later event")


def test_events_recorded_right_before_the_store_stops_all_land(
    zookeeper: ZooKeeperServer, zk_root: str
) -> None:
    """A daemon's last steps record events and then stop its store at once: stop sends
    what is queued first (one was in flight, the others waited for it)."""
    first = Store(zookeeper.hosts, zk_root, timeout=6.0)
    first.start()
    log = EventLog(first)
    for i in range(50):
        log.record("Node", f"n{i}", "Stopping", "shutdown")
    first.stop()
    second = Store(zookeeper.hosts, zk_root, timeout=6.0)
    second.start()
    try:
        assert [e.name for e in EventLog(second).list(limit=100)] == [f"n{i}" for i in range(50)]
    finally:
        second.stop()


def test_a_stopped_store_and_its_appender_are_not_kept_alive(
    zookeeper: ZooKeeperServer, zk_root: str
) -> None:
    one = Store(zookeeper.hosts, zk_root, timeout=6.0)
    one.start()
    EventLog(one).record("Node", "n0", "Ready", "ready")
    one.stop()
    gone = weakref.ref(one)
    del one
    # kazoo's threads may hold the last answer's callback a moment after stop returns
    # (seen under a loaded parallel run): released within a deadline, never kept.

    def collected() -> bool:
        gc.collect()
        return gone() is None

    wait_for(collected, timeout=10.0, what="the stopped store to be collected")
