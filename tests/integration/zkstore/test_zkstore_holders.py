"""zkstore/holders.py's claim against a real ZooKeeper: a node becomes a holder only while
the VM is placed on it, checked as the claim commits (docs/ha.md)."""

from __future__ import annotations

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
