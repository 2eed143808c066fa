"""hypervisor.owners: a domain's owner is read once and kept until forgotten or stale."""

from __future__ import annotations

import pytest

from hypervisor.owners import NOT_OURS, OwnerCache


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_an_owner_is_read_once_until_forgotten_or_older_than_the_ttl() -> None:
    clock, reads = Clock(), []

    def read() -> str:
        reads.append(1)
        return "/pvc"

    cache = OwnerCache(ttl=60.0, clock=clock)
    assert cache.owner("u1", read) == "/pvc"
    assert cache.owner("u1", read) == "/pvc"
    assert len(reads) == 1
    cache.forget("u1")  # redefined
    cache.owner("u1", read)
    assert len(reads) == 2
    clock.now += 61.0
    cache.owner("u1", read)
    assert len(reads) == 3


def test_not_ours_is_kept_too_and_undefined_domains_are_dropped() -> None:
    cache, reads = OwnerCache(), []

    def foreign() -> None:
        reads.append(1)
        return NOT_OURS

    assert cache.owner("u1", foreign) is NOT_OURS
    assert cache.owner("u1", foreign) is NOT_OURS
    assert len(reads) == 1
    cache.keep_only(["u2"])
    cache.owner("u1", foreign)
    assert len(reads) == 2


def test_a_failed_read_keeps_nothing() -> None:
    cache = OwnerCache()

    def fails() -> str:
        raise RuntimeError("libvirt went away")

    with pytest.raises(RuntimeError):
        cache.owner("u1", fails)
    assert cache.owner("u1", lambda: "/pvc") == "/pvc"
