"""zkstore/holders.py's claim against a real ZooKeeper: a node becomes a holder only while
the VM is placed on it, checked as the claim commits (docs/ha.md)."""

from __future__ import annotations

import threading

from schemas import Placement
from tests.helpers import apply_vm
from zkstore import Claim, Holders, Store, paths


def test_a_node_the_vm_is_placed_on_claims_it_once(store: Store) -> None:
    apply_vm(store, "web")
    store.write_placement("web", Placement(node="n1"), epoch=None)
    holders = Holders(store)
    assert holders.claim("web", "n1") == Claim.ADDED
    # Already a holder: still one, and the claim says so (a restarted daemon's first claim
    # of a VM it held before then looks for a migration that ended while it was down).
    assert holders.claim("web", "n1") == Claim.HELD
    assert holders.read("web") == {"n1"}


def test_a_node_the_vm_is_not_placed_on_never_becomes_a_holder(store: Store) -> None:
    apply_vm(store, "web")
    holders = Holders(store)
    assert holders.claim("web", "n1") == Claim.REFUSED  # placed nowhere
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
