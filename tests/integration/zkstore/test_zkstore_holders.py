"""zkstore/holders.py's claim against a real ZooKeeper: a node becomes a holder only while
the VM is placed on it, checked as the claim commits (docs/ha.md)."""

from __future__ import annotations

import threading

from schemas import Placement
from tests.helpers import apply_vm
from zkstore import Holders, Store, paths


def test_a_node_the_vm_is_placed_on_claims_it_once(store: Store) -> None:
    apply_vm(store, "web")
    store.write_placement("web", Placement(node="n1"), epoch=None)
    holders = Holders(store)
    assert holders.claim("web", "n1")
    assert holders.claim("web", "n1")  # already a holder: still one
    assert holders.read("web") == {"n1"}


def test_a_node_the_vm_is_not_placed_on_never_becomes_a_holder(store: Store) -> None:
    apply_vm(store, "web")
    holders = Holders(store)
    assert not holders.claim("web", "n1")  # placed nowhere
    store.write_placement("web", Placement(node="n2"), epoch=None)
    assert not holders.claim("web", "n1")  # placed elsewhere
    assert holders.read("web") == frozenset()
    # No empty set is left behind by the refused claims (it would stay for good, and a
    # rename to this name would fail on it).
    assert store.client.exists(store.path(paths.holders("web"))) is None
    assert holders.claim("web", "n2")
    store.write_placement("web", Placement(node="n1"), epoch=None)  # moved: n2's entry goes
    assert not holders.claim("web", "n2")
    assert holders.read("web") == {"n2"}  # n2 still holds it until it lets go


def test_a_claim_racing_the_sets_tidy_up_goes_round_again(store: Store) -> None:
    """The set's znode is deleted by the last release; a claim whose create of it came
    before that delete finds no parent for its holder znode, and tries again."""
    apply_vm(store, "web")
    store.write_placement("web", Placement(node="n1"), epoch=None)
    holders = Holders(store)
    original = store.client.create_async
    calls = {"n": 0}

    def create_then_tidy(path: str, *args: object, **kwargs: object) -> object:
        result = original(path, *args, **kwargs)
        if path == store.path(paths.holders("web")) and calls["n"] == 0:
            calls["n"] += 1
            result.get()
            store.client.delete(path)  # a release's tidy, right between the two
        return result

    store.client.create_async = create_then_tidy  # type: ignore[method-assign]
    try:
        assert holders.claim("web", "n1")
    finally:
        del store.client.create_async
    assert holders.read("web") == {"n1"}


def test_the_read_before_a_start_sets_the_watch_that_tells_of_a_release(store: Store) -> None:
    """The node's last read before a start (the set, with its index entry) carries the watch
    on the set: a release by another node after the read fires it, with no watch request of
    its own."""
    apply_vm(store, "web")
    store.write_placement("web", Placement(node="n2"), epoch=None)
    holders = Holders(store)
    assert holders.claim("web", "n2")
    store.write_placement("web", Placement(node="n1"), epoch=None)
    assert holders.claim("web", "n1")
    fired = threading.Event()
    seen, entry = holders.read_with_entry("web", "n1", watch=lambda _event: fired.set())
    assert seen == {"n1", "n2"} and entry is not None and entry[0].node == "n1"
    assert not fired.is_set()
    holders.release("web", "n2")
    assert fired.wait(5.0), "the release did not fire the watch set by the read"
    assert holders.read_with_entry("web", "n1")[0] == {"n1"}


def test_the_read_sent_behind_a_claim_sees_the_claim(store: Store) -> None:
    """A first start sends its sole-holder read right behind the claim's transaction: one
    session's requests are answered in order, so the read shows the claim, and the entry's
    version is the one the start's Starting write then checks."""
    apply_vm(store, "web")
    store.write_placement("web", Placement(node="n1"), epoch=None)
    holders = Holders(store)
    claimed, sent = holders.claim_then(
        "web", "n1", lambda: holders.send_read_with_entry("web", "n1")
    )
    assert claimed
    seen, entry = sent.get()
    assert seen == {"n1"}
    assert entry is not None and entry[0].node == "n1"
    _, stat = store.client.get(store.path(paths.node_index_entry("n1", "web")))
    assert entry[1] == stat.version
    assert not sent.stale()
    # Refused (placed elsewhere): the read behind it shows no holder, and no set is left.
    apply_vm(store, "db")
    store.write_placement("db", Placement(node="n2"), epoch=None)
    claimed, refused = holders.claim_then(
        "db", "n1", lambda: holders.send_read_with_entry("db", "n1")
    )
    assert not claimed
    assert refused.get() == (frozenset(), None)


def test_a_read_is_stale_once_this_node_wrote_to_the_set_after_it(store: Store) -> None:
    """A live migration's source hands the VM to its target (ensure) between a read and the
    start decision: that read may not show the target, so it is stale and is read again.
    Writes to another VM's set do not make it stale."""
    apply_vm(store, "web")
    store.write_placement("web", Placement(node="n1"), epoch=None)
    holders = Holders(store)
    assert holders.claim("web", "n1")
    sent = holders.send_read_with_entry("web", "n1")
    assert sent.get()[0] == {"n1"}
    holders.ensure("other-vm", "n2")
    assert not sent.stale()
    holders.ensure("web", "n2")
    assert sent.stale()
    assert holders.read_with_entry("web", "n1")[0] == {"n1", "n2"}
    again = holders.send_read_with_entry("web", "n1")
    holders.set_migrating("web", "n1", "n2")
    assert again.stale()
    last = holders.send_read_with_entry("web", "n1")
    holders.release("web", "n2")
    assert last.stale()
