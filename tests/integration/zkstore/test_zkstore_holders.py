"""zkstore/holders.py's claim against a real ZooKeeper: a node becomes a holder only while
the VM is placed on it, checked as the claim commits (docs/ha.md)."""

from __future__ import annotations

import threading

from schemas import Placement
from tests.helpers import apply_vm
from zkstore import Claim, Holders, Release, Store, paths


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


def test_a_claim_that_makes_the_set_is_the_sole_holder_with_the_placement_it_checked(
    store: Store,
) -> None:
    """claim_fresh: the set made in the claim's own transaction (MADE: nobody held the VM),
    the index entry read behind it; a set that exists falls back to claim (no entry); a
    refused one makes nothing."""
    apply_vm(store, "web")
    holders = Holders(store)
    assert holders.claim_fresh("web", "n1") == (Claim.REFUSED, None)  # placed nowhere
    assert store.client.exists(store.path(paths.holders("web"))) is None  # nothing made
    store.write_placement("web", Placement(node="n1", epoch=3), epoch=None)
    claim, entry = holders.claim_fresh("web", "n1")
    assert claim == Claim.MADE
    assert entry is not None and (entry[0].node, entry[0].epoch) == ("n1", 3)
    assert entry[1] == store.client.exists(store.path(paths.node_index_entry("n1", "web"))).version
    assert holders.read("web") == {"n1"}
    # Held already (a restarted daemon): the set exists, so it is no fresh claim.
    assert holders.claim_fresh("web", "n1") == (Claim.HELD, None)
    # Moved to n2 while n1 still holds it: n2 joins the set, and is not its sole holder.
    store.write_placement("web", Placement(node="n2"), epoch=None)
    assert holders.claim_fresh("web", "n2") == (Claim.ADDED, None)
    assert holders.read("web") == {"n1", "n2"}
    assert holders.claim_fresh("web", "n1") == (Claim.REFUSED, None)  # n1's entry went


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


def test_a_migrations_target_cannot_let_go_until_its_source_knows_the_outcome(
    store: Store,
) -> None:
    """The source's record marks the target's entry: the target's release is refused (and
    its watch fires once the mark goes) until the source clears the record; the record is
    refused when the target let go already (the job must not begin)."""
    apply_vm(store, "web")
    holders = Holders(store)
    holders.ensure("web", "n1")
    holders.ensure("web", "n2")
    assert holders.set_migrating("web", "n1", "n2")
    assert holders.migrating_to("web", "n1") == "n2"
    woken = threading.Event()
    assert holders.release("web", "n2", on_unblock=lambda _e: woken.set()) == Release.BLOCKED
    assert holders.read("web") == {"n1", "n2"}
    holders.set_migrating("web", "n1", None)  # the source knows how the job ended
    assert woken.wait(10)
    assert holders.migrating_to("web", "n1") is None
    assert holders.release("web", "n2") == Release.RELEASED
    assert not holders.set_migrating("web", "n1", "n2")  # n2 let go: no job may begin
    assert holders.migrating_to("web", "n1") is None
    assert holders.release("web", "n2") == Release.NOT_HELD


def test_a_sources_release_or_fence_takes_its_records_and_marks_along(store: Store) -> None:
    apply_vm(store, "web")
    holders = Holders(store)
    for node in ("n1", "n2", "n3"):
        holders.ensure("web", node)
    assert holders.set_migrating("web", "n1", "n2")
    assert holders.release("web", "n1") == Release.RELEASED  # its domain is gone: job over
    assert holders.release("web", "n2") == Release.RELEASED  # no mark left to block it
    assert holders.set_migrating("web", "n3", "n1") is False  # n1 let go
    holders.ensure("web", "n1")
    assert holders.set_migrating("web", "n3", "n1")
    # A fence of the target (n1 is powered off: an incoming copy died with it) removes it
    # despite the mark; the source's stale record is cleared by its next look.
    assert holders.release_node("n1") == ["web"]
    assert holders.read("web") == {"n3"}
    holders.set_migrating("web", "n3", None)
    assert holders.release("web", "n3") == Release.RELEASED
    assert holders.read("web") == frozenset()


def test_two_nodes_marked_by_each_others_records_both_let_go(store: Store) -> None:
    """n1's record of a move to n2 and n2's of a move back, neither cleared (each daemon
    missed its job's end): each release clears its own record before it looks at marks,
    so the two never wait for each other."""
    apply_vm(store, "web")
    holders = Holders(store)
    holders.ensure("web", "n1")
    holders.ensure("web", "n2")
    assert holders.set_migrating("web", "n1", "n2")
    assert holders.set_migrating("web", "n2", "n1")
    assert holders.release("web", "n1") == Release.BLOCKED  # n2's record still marks n1
    assert holders.migrating_to("web", "n1") is None  # ... but n1's own record went
    assert holders.release("web", "n2") == Release.RELEASED
    assert holders.release("web", "n1") == Release.RELEASED
    assert holders.read("web") == frozenset()


def test_an_older_daemons_record_is_read_and_cleared(store: Store) -> None:
    """Before the marks, the target was the source's entry data: an upgraded daemon still
    finds where a job it began went, and clears that record with its own."""
    apply_vm(store, "web")
    holders = Holders(store)
    holders.ensure("web", "n1")
    store.client.set(store.path(paths.holder("web", "n1")), b"n2")
    assert holders.migrating_to("web", "n1") == "n2"
    holders.set_migrating("web", "n1", None)
    assert holders.migrating_to("web", "n1") is None
