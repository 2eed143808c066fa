"""zkstore/events.py against a real ZooKeeper: the log stays bounded, newest kept."""

from __future__ import annotations

import threading

from tests.helpers import wait_for
from zkstore import Store, paths
from zkstore.events import EventLog


def test_the_log_keeps_the_newest_entries_within_its_limit(store: Store) -> None:
    log = EventLog(store, limit=40, trim_every=10)
    for i in range(150):
        log.record("VirtualMachine", f"vm{i}", "Created", f"created {i}")
    events_dir = store.path(paths.EVENTS)
    # Trims run in the background after every 10th event: wait for the last one to land.
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
