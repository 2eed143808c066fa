"""Fixtures the controller tests share."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from controllers.scheduler import Scheduler
from zkstore import Store


@pytest.fixture
def scheduler(store: Store) -> Iterator[Scheduler]:
    """A running scheduler in a fresh epoch of its own, over the test's store."""
    sched = Scheduler(store, store.bump_epoch("test"))
    sched.start()
    yield sched
    sched.stop()
