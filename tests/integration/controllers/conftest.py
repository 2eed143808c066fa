"""Fixtures the controller tests share."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from controllers.scheduler import Scheduler
from controllers.vm_controller import VMController
from hypervisor import HypervisorWorld, Timings, write_test_host_xml
from zkstore import Store


@pytest.fixture
def scheduler(store: Store) -> Iterator[Scheduler]:
    """A running scheduler in a fresh epoch of its own, over the test's store."""
    sched = Scheduler(store, store.bump_epoch("test"))
    sched.start()
    yield sched
    sched.stop()


@pytest.fixture
def world() -> Iterator[HypervisorWorld]:
    """The fault-injecting hypervisor with real durations (a start takes 0.1 s)."""
    the_world = HypervisorWorld(Timings(start=0.1, shutdown=0.2, destroy=0.1, migrate=0.5))
    yield the_world
    the_world.close()


@pytest.fixture
def running() -> Iterator[Callable[[VMController], VMController]]:
    """Start a VM controller for this test; each one started is stopped, and its driver
    closed, at the end."""
    started: list[VMController] = []

    def run(controller: VMController) -> VMController:
        controller.start()
        started.append(controller)
        return controller

    yield run
    for controller in started:
        controller.stop()
        controller.driver.close()


@pytest.fixture
def vm_node(
    store: Store,
    world: HypervisorWorld,
    running: Callable[[VMController], VMController],
    tmp_path: Path,
) -> Callable[..., VMController]:
    """Start node n1's VM controller on ``world`` (keyword arguments to VMController);
    stopped at the end of the test."""

    def start(**options: Any) -> VMController:
        uri = write_test_host_xml(tmp_path / "n1.xml", 4096, 4)
        return running(
            VMController(
                store, world.driver("n1", uri), "n1", disk_dir=str(tmp_path), workers=2, **options
            )
        )

    return start
