"""controllers.vm_resync: a resync pass reconciles what changed without an event, and
every VM on a full pass."""

from __future__ import annotations

import pytest

from controllers.vm_resync import ResyncPlan
from hypervisor import DomainState

RUN, OFF = DomainState.RUNNING, DomainState.SHUTOFF


def test_the_first_pass_and_every_full_pass_reconcile_everything() -> None:
    plan = ResyncPlan(full_every=3)
    domains = {"a": RUN, "stray": RUN}
    assert plan.keys({"a", "b"}, domains) == {"a", "b", "stray"}
    assert plan.keys({"a", "b"}, domains) == set()
    assert plan.keys({"a", "b"}, domains) == {"a", "b", "stray"}  # the 3rd: full
    assert plan.keys({"a", "b"}, domains) == set()


def test_the_first_pass_skips_what_a_reconcile_since_the_start_saw_as_it_is_now() -> None:
    """A daemon's first pass has no listing to compare with, yet a VM reconciled since the
    daemon started and left as the listing shows it needs no pass more (every new VM of a
    converge got one, issue 16); one that changed since, or is being reconciled, does."""
    plan = ResyncPlan(full_every=100)
    plan.observe("a", RUN)
    plan.observe("b", RUN)
    plan.observe("c", RUN)
    plan.forget("c")
    assert plan.keys({"a", "b", "c", "d"}, {"a": RUN, "b": OFF, "c": RUN}) == {"b", "c", "d"}


def test_a_pass_reconciles_what_changed_since_the_last_one() -> None:
    plan = ResyncPlan(full_every=100)
    plan.keys({"a", "b", "c"}, {"a": RUN, "b": RUN})
    # a crashed unseen, b's domain vanished, c was placed elsewhere, d was placed here,
    # and a domain nobody placed here appeared.
    after = {"a": OFF, "stray": RUN}
    assert plan.keys({"a", "b", "d"}, after) == {"a", "b", "c", "d", "stray"}
    assert plan.keys({"a", "b", "d"}, after) == set()


def test_what_a_reconcile_saw_as_it_is_now_is_not_reconciled_again() -> None:
    """A VM placed and started since the last pass was reconciled by its own events: the
    pass skips it while the listing shows what that reconcile left. A change since, a
    reconcile still under way (forget) or a VM that left is reconciled as before."""
    plan = ResyncPlan(full_every=100)
    plan.keys({"a"}, {"a": RUN})
    for name in ("n1", "n2", "n3", "gone"):
        plan.observe(name, RUN)
    plan.forget("n3")  # reconciling again now: what it saw is old
    after = {"a": RUN, "n1": RUN, "n2": OFF, "n3": RUN, "gone": RUN}
    # n1: as seen; n2: crashed since; n3: under way; gone: placed elsewhere (not in placed)
    assert plan.keys({"a", "n1", "n2", "n3"}, after) == {"n2", "n3", "gone"}


def test_domains_that_cannot_be_listed_mean_every_placed_vm_and_a_full_pass_next() -> None:
    plan = ResyncPlan(full_every=100)
    plan.keys({"a"}, {"a": RUN})
    assert plan.keys({"a", "b"}, None) == {"a", "b"}
    assert plan.keys({"a", "b"}, {"a": RUN, "x": OFF}) == {"a", "b", "x"}


def test_full_every_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        ResyncPlan(full_every=0)
