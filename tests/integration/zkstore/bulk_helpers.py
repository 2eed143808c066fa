"""Races made certain for the tests of the bulk apply (zkstore/bulkwrite.py)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from zkstore import bulkwrite


def between_read_and_write(
    monkeypatch: pytest.MonkeyPatch, name: str, change: Callable[[], object]
) -> None:
    """Run ``change`` once: after a bulk apply has read object ``name`` and planned it,
    before it writes the group of objects that holds it (another writer in between)."""
    write = bulkwrite._Segment.write
    pending = [change]

    def racing(segment: bulkwrite._Segment) -> None:
        if pending and any(p.resource.name == name for p in segment.plans.values()):
            pending.pop()()
        write(segment)

    monkeypatch.setattr(bulkwrite._Segment, "write", racing)
