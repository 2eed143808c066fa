"""zkstore/events.py against a real ZooKeeper: the log stays bounded, newest kept."""

from __future__ import annotations

import threading
import time

from zkstore import Store, paths
from zkstore.events import EventLog


def test_the_log_keeps_the_newest_entries_within_its_limit(store: Store) -> None:
    log = EventLog(store, limit=40, trim_every=10)
    for i in range(150):
        log.record("VirtualMachine", f"vm{i}", "Created", f"created {i}")
    events_dir = store.path(paths.EVENTS)
    deadline = time.monotonic() + 10
    # Trims run in the background after every 10th event: wait for the last one to land.
    while time.monotonic() < deadline:
        children = store.client.get_children(events_dir)
        if len(children) <= 40 + 10:
            break
        time.sleep(0.05)
    assert len(children) <= 50, f"{len(children)} events kept, limit 40 (+10 between trims)"
    newest = log.list(limit=5)
    assert [e.name for e in newest] == [f"vm{i}" for i in range(145, 150)]


def test_concurrent_trims_do_not_fail_or_overdelete(store: Store) -> None:
    log = EventLog(store, limit=30, trim_every=1000)
    for i in range(80):
        log.record("Node", f"n{i}", "Ready", "ready")
    events_dir = store.path(paths.EVENTS)
    deadline = time.monotonic() + 10
    while len(store.client.get_children(events_dir)) < 80 and time.monotonic() < deadline:
        time.sleep(0.02)
    trims = [threading.Thread(target=log.trim) for _ in range(4)]
    for t in trims:
        t.start()
    for t in trims:
        t.join(10)
    log.trim()  # runs, or makes the trim running now go round again
    deadline = time.monotonic() + 10
    while len(store.client.get_children(events_dir)) > 30 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(store.client.get_children(events_dir)) == 30
    assert [e.name for e in log.list(limit=30)] == [f"n{i}" for i in range(50, 80)]
