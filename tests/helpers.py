"""Test helpers: wait on a condition with a deadline, never sleep-and-hope."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import pytest
from kazoo.client import KazooClient
from prometheus_client.parser import text_string_to_metric_families

from schemas import parse_resource
from zkstore import Store

T = TypeVar("T")


def wait_for(
    check: Callable[[], T], timeout: float = 20.0, what: str = "condition", interval: float = 0.05
) -> T:
    """Poll ``check`` until it returns something truthy; fail the test at the deadline."""
    deadline = time.monotonic() + timeout
    last: T = check()
    while not last:
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what} (last: {last!r})")
        time.sleep(interval)
        last = check()
    return last


def holds_for(check: Callable[[], bool], seconds: float, what: str, interval: float = 0.1) -> None:
    """Fail as soon as ``check`` is false within ``seconds``: for behaviour whose point is
    that nothing changes over time, so the elapsed time is what is under test."""
    deadline = time.monotonic() + seconds
    while True:
        if not check():
            left = max(0.0, deadline - time.monotonic())
            pytest.fail(f"{what} stopped holding with {left:.1f}s to go")
        if time.monotonic() >= deadline:
            return
        time.sleep(interval)


@contextmanager
def session_lost(store: Store, hosts: str) -> Iterator[Store]:
    """Expire ``store``'s session from a second client holding its id (every watch of it is
    gone), and yield another store to change things with meanwhile; on leaving, wait until
    ``store`` has a new session."""
    session_id, password = store.client.client_id
    other = Store(hosts, store.root, timeout=6.0)
    other.start()
    try:
        thief = KazooClient(hosts=hosts, client_id=(session_id, password))
        thief.start()
        thief.stop()
        thief.close()
        yield other
    finally:
        other.stop()
    wait_for(
        lambda: (store.client.client_id or (session_id,))[0] != session_id, 30, "a new session"
    )


def node_of(store: Store, vm: str) -> str | None:
    """The node a VM is placed on, as stored now (None when unplaced)."""
    placement = store.read_placement(vm)
    return placement.node if placement else None


def vm_manifest(
    name: str, *, method: str = "auto", home: str = "node1", **spec: object
) -> dict[str, object]:
    """A 64 MiB VirtualMachine manifest placed on ``home`` that moves by ``method``."""
    return {
        "apiVersion": "pvc/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": name},
        "spec": {
            "memory": "64Mi",
            "placement": {"home": home},
            "migration": {"method": method},
            **spec,
        },
    }


def apply_vm(store: Store, name: str, memory: str = "64Mi", **spec: object) -> None:
    """Apply a VirtualMachine of ``memory`` (and ``spec``) straight to the store."""
    store.apply(
        parse_resource(
            {
                "apiVersion": "pvc/v1",
                "kind": "VirtualMachine",
                "metadata": {"name": name},
                "spec": {"memory": memory, **spec},
            }
        )
    )


def metric_value(text: str, name: str, **labels: str) -> float | None:
    """The value of sample ``name`` whose labels include ``labels`` in a Prometheus scrape
    (text format); None when there is none."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and labels.items() <= sample.labels.items():
                return float(sample.value)
    return None
