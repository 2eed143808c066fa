"""controllers/vm_claims.py against a real ZooKeeper: a first start uses the sole-holder read
its claim sent behind it (one round trip less), never a read that may have missed this
node's own write to the set, nor one from an earlier pass."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from controllers.vm_claims import Claims
from controllers.vm_controller import VMController
from hypervisor import HypervisorWorld, write_test_host_xml
from schemas import Placement
from tests.helpers import apply_vm, holds_for, wait_for
from zkstore import Store, paths
from zkstore import holders as holders_module


@pytest.fixture
def claims(store: Store, world: HypervisorWorld, tmp_path: Path) -> Claims:
    """Node n1's claims, from a VM controller that is built, not started (nothing runs)."""
    uri = write_test_host_xml(tmp_path / "n1.xml", 4096, 4)
    controller = VMController(store, world.driver("n1", uri), "n1", disk_dir=str(tmp_path))
    apply_vm(store, "web")
    store.write_placement("web", Placement(node="n1"), epoch=None)
    return controller.claims


def set_reads(store: Store, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every read of a holder set from here on."""
    seen: list[str] = []
    real = store.client.get_children_async
    holders = store.path(paths.holders("web"))

    def counted(path: str, *args: Any, **kwargs: Any) -> Any:
        if path == holders:
            seen.append(path)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(store.client, "get_children_async", counted)
    return seen


def test_a_first_start_uses_the_read_its_claim_sent(
    claims: Claims, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads = set_reads(store, monkeypatch)
    assert claims.claim("web")
    holders, entry = claims.sole_read("web")
    assert holders == {"n1"} and entry is not None and entry[0].node == "n1"
    assert len(reads) == 1  # the read behind the claim, and no other
    claims.end_pass("web")
    claims.sole_read("web")  # a later look reads anew
    assert len(reads) == 2


def test_a_read_this_node_wrote_to_the_set_after_is_read_again(claims: Claims) -> None:
    """A live migration's hand-over between the claim and the start decision (this node
    makes the target a holder): the read the claim sent cannot show it; the start must."""
    assert claims.claim("web")
    claims.holders.ensure("web", "n2")
    holders, _ = claims.sole_read("web")
    assert holders == {"n1", "n2"}


def test_a_read_from_an_earlier_pass_is_never_used(claims: Claims, store: Store) -> None:
    assert claims.claim("web")
    claims.end_pass("web")  # the pass ended before its start: its read goes
    store.client.create(store.path(paths.holder("web", "n3")), b"")  # not through claims
    holders, _ = claims.sole_read("web")
    assert holders == {"n1", "n3"}


def test_a_refused_claim_does_not_wake_its_vm_again(
    claims: Claims, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Placed elsewhere since the cache said here: the claim is refused and the set it made
    is deleted again, which fires the watch its read set. That wakes nothing (the refused
    pass looks again after its own short delay; a wake would loop while the cache lags),
    and the watch's mark goes, so a later read sets one again."""
    wakes: list[str] = []
    monkeypatch.setattr(claims.departures, "_wake", wakes.append)
    store.write_placement("web", Placement(node="n2"), epoch=None)
    assert not claims.claim("web")
    claims.end_pass("web")
    wait_for(lambda: claims.departures.holders_watcher("web") is not None, 5, "the mark to go")
    holds_for(lambda: not wakes, 1.0, "no wake from the refused claim's tidy-up")


def test_reads_sent_before_the_write_counts_are_dropped_are_stale(
    claims: Claims, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The per-VM write counts are bounded: when they are dropped, every read sent before
    counts as stale (read again), never as fresh."""
    monkeypatch.setattr(holders_module, "_WRITES_KEPT", 2)
    holders = claims.holders
    assert holders.claim("web", "n1")
    sent = holders.send_read_with_entry("web", "n1")
    holders.set_migrating("a", "n1", None)
    holders.set_migrating("b", "n1", None)
    assert not sent.stale()
    holders.set_migrating("c", "n1", None)  # a third VM: the counts are dropped
    assert sent.stale()
