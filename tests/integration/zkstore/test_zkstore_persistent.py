"""zkstore/persistent.py (ZooKeeper 3.6's persistent recursive watch on a kazoo client) and
the caches built on it (zkstore/subtree.py), against a real ZooKeeper."""

from __future__ import annotations

import socket
import threading

from kazoo.protocol.states import KazooState, WatchedEvent

from localcluster.zookeeper import ZooKeeperServer
from tests.helpers import wait_for
from zkstore import Store
from zkstore.persistent import PersistentWatches
from zkstore.subtree import SubtreeWatch


class Events:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.seen: list[tuple[str, str]] = []

    def __call__(self, event: WatchedEvent) -> None:
        with self._lock:
            self.seen.append((str(event.type), event.path))

    def take(self) -> list[tuple[str, str]]:
        with self._lock:
            taken, self.seen = self.seen, []
        return taken


def test_every_change_below_the_root_is_reported_and_one_shot_watches_still_fire(
    store: Store,
) -> None:
    client = store.client
    root = store.path("pw")
    client.ensure_path(f"{root}/a")
    client.ensure_path(store.path("elsewhere"))
    events = Events()
    assert PersistentWatches.of(client).add_async(root, events).get(timeout=5) is True
    one_shot = Events()
    client.get_children(root, watch=one_shot)
    client.create(f"{root}/a/b", b"1")
    client.set(f"{root}/a/b", b"2")
    client.delete(f"{root}/a/b")
    client.create(f"{root}/c")
    client.create(store.path("elsewhere/d"))  # not below the root
    client.set(root, b"x")  # the root itself
    expected = [
        ("CREATED", f"{root}/a/b"),
        ("CHANGED", f"{root}/a/b"),
        ("DELETED", f"{root}/a/b"),
        ("CREATED", f"{root}/c"),
        ("CHANGED", root),
    ]
    wait_for(lambda: events.seen == expected, 10, f"the recursive events (saw {events.seen})")
    # The one-shot child watch on the same path fired once, through kazoo's own dispatch.
    wait_for(lambda: one_shot.seen == [("CHILD", root)], 10, "the one-shot child watch")
    # Removed: no more calls (and it is never re-armed by anyone).
    PersistentWatches.of(client).remove(root, events)
    client.create(f"{root}/e")
    client.sync(root)
    assert events.take() == expected


def test_a_cache_keeps_following_after_the_connection_drops(store: Store) -> None:
    """The server drops a connection's watches with it, and kazoo sets again only its own
    one-shot watches as it reconnects within the session: the cache sets its persistent
    watch again, so what is created after the reconnect is followed."""
    client = store.client
    root = store.path("pw-reconnect")
    client.ensure_path(f"{root}/before")
    changed: list[str] = []
    tree = SubtreeWatch(client, root, changed.append)
    tree.start(10)
    try:
        assert tree.keys() == ["before"]
        reconnected = threading.Event()

        def on_state(state: KazooState) -> None:
            if state == KazooState.CONNECTED:
                reconnected.set()

        client.add_listener(on_state)
        session = client.client_id
        sock = client._connection._socket
        assert sock is not None
        sock.shutdown(socket.SHUT_RDWR)  # the connection breaks; the session lives on
        assert reconnected.wait(20), "kazoo did not reconnect"
        client.remove_listener(on_state)
        assert client.client_id == session
        client.create(f"{root}/after", b"1")
        wait_for(lambda: tree.keys() == ["after", "before"], 10, "the new key followed")
        client.set(f"{root}/after", b"2")
        wait_for(lambda: (tree.node("after") or (b"",))[0] == b"2", 10, "its change")
    finally:
        tree.close()


def test_without_the_persistent_watch_new_keys_are_found_by_listing(store: Store) -> None:
    """The one-shot mode (a server older than 3.6): a new key is found by listing the root,
    and its children by listing the key, each with a child watch."""
    client = store.client
    root = store.path("pw-one-shot")
    client.ensure_path(root)
    tree = SubtreeWatch(client, root, lambda _key: None, persistent=False)
    tree.start(10)
    try:
        before = tree.requests
        client.create(f"{root}/k", b"1")
        wait_for(lambda: tree.node("k") is not None, 10, "the new key")
        wait_for(tree._settled, 10, "no read in flight")
        assert tree.requests - before == 3  # the root's listing, the key's read and listing
        client.create(f"{root}/k/child", b"c")
        wait_for(lambda: tree.node("k", "child") is not None, 10, "its child followed")
    finally:
        tree.close()


def test_a_key_deleted_and_created_again_at_once_ends_in_the_cache(store: Store) -> None:
    """Its deletion and its creation are reported while it is still known: the read the
    deletion sent may find it gone after the creation's read was sent, and that read must
    bring it back, children and all."""
    client = store.client
    root = store.path("pw-churn")
    client.ensure_path(root)
    tree = SubtreeWatch(client, root, lambda _key: None, children=("status",))
    tree.start(10)
    try:
        for i in range(40):
            client.create(f"{root}/k", str(i).encode())
            client.create(f"{root}/k/status", f"s{i}".encode())
            client.delete(f"{root}/k", recursive=True)
        client.create(f"{root}/k", b"last")
        client.create(f"{root}/k/status", b"s-last")
        wait_for(
            lambda: (
                tree.node("k") is not None
                and tree.node("k")[0] == b"last"  # type: ignore[index]
                and (tree.node("k", "status") or (b"",))[0] == b"s-last"
            ),
            10,
            "the last incarnation with its status",
        )
    finally:
        tree.close()


def test_two_caches_of_one_root_on_one_client_both_follow_it(store: Store) -> None:
    """A daemon's scheduler and its agent each cache the Nodes over the same client."""
    client = store.client
    root = store.path("pw-shared")
    client.ensure_path(root)
    first = SubtreeWatch(client, root, lambda _key: None)
    second = SubtreeWatch(client, root, lambda _key: None)
    first.start(10)
    second.start(10)
    try:
        client.create(f"{root}/k", b"1")
        wait_for(lambda: first.keys() == ["k"] and second.keys() == ["k"], 10, "both")
        first.close()
        client.set(f"{root}/k", b"2")
        wait_for(lambda: (second.node("k") or (b"",))[0] == b"2", 10, "the other still follows")
    finally:
        first.close()
        second.close()


def _status_cache(store: Store, name: str) -> tuple[str, SubtreeWatch]:
    """A root holding key ``k`` with its status ``first``, and a started cache of it."""
    root = store.path(name)
    store.client.ensure_path(f"{root}/k")
    store.client.create(f"{root}/k/status", b"first")
    tree = SubtreeWatch(store.client, root, lambda _key: None, children=("status",))
    tree.start(10)
    return root, tree


def test_a_change_reported_while_its_read_is_unanswered_sends_no_read_more(
    store: Store,
) -> None:
    """A data change reported while the cache's read of that znode is still unanswered sends
    no read more: that answer comes after the event (one connection is answered in order),
    so it holds the change. The read in flight is held here, never answered: the timing it
    stands for (a write landing between a read's send and its answer) cannot be made to
    happen on cue. Once no read is in flight, a change is read again."""
    client = store.client
    root, tree = _status_cache(store, "pw-covered")
    try:
        held = client.handler.async_result()
        tree._unanswered["k/status"] = held  # a read of k/status sent, not yet answered
        client.set(f"{root}/k/status", b"second")
        # A later change below the root: once the cache holds it, the earlier event has been
        # through too (events and answers come in order), and a read it sent would have
        # been answered before this one.
        client.create(f"{root}/after", b"")
        wait_for(lambda: tree.node("after") is not None, 10, "the later change")
        assert (tree.node("k", "status") or (b"",))[0] == b"first"  # no read was sent
        del tree._unanswered["k/status"]  # no read in flight now
        client.set(f"{root}/k/status", b"third")
        wait_for(lambda: (tree.node("k", "status") or (b"",))[0] == b"third", 10, "read again")
    finally:
        tree.close()


def test_a_burst_of_changes_ends_with_the_last_value(
    store: Store, zookeeper: ZooKeeperServer, zk_root: str
) -> None:
    """Another client's 300 writes of one znode in one transaction: however many of their
    events find a read unanswered (and send none), the cache ends with the last value, the
    one thing that must never be lost; and it never reads more than once per change."""
    root, tree = _status_cache(store, "pw-coalesce")
    writer = Store(zookeeper.hosts, zk_root, timeout=6.0)
    writer.start()
    try:
        before = tree.requests
        txn = writer.client.transaction()
        for i in range(300):
            txn.set_data(f"{root}/k/status", b"%d" % i)
        assert not any(isinstance(r, Exception) for r in txn.commit())
        wait_for(lambda: (tree.node("k", "status") or (b"",))[0] == b"299", 10, "the last write")
        wait_for(tree._settled, 10, "no read in flight")
        assert (tree.node("k", "status") or (b"",))[0] == b"299"
        assert tree.requests - before <= 300
    finally:
        writer.stop()
        tree.close()
