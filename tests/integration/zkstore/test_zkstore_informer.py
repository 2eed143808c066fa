"""Informers: list + watch a kind and report the names of changed objects."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from schemas import (
    Network,
    Placement,
    VirtualMachine,
    VirtualMachineStatus,
    VMPhase,
    parse_resource,
)
from tests.helpers import wait_for
from zkstore import ResourceInformer, Store


def make_vm(name: str, **spec: Any) -> VirtualMachine:
    obj = parse_resource(
        {
            "apiVersion": "pvc/v1",
            "kind": "VirtualMachine",
            "metadata": {"name": name},
            "spec": {"memory": "1Gi", **spec},
        }
    )
    assert isinstance(obj, VirtualMachine)
    return obj


class Recorder:
    """Collects reported keys from kazoo's event thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._keys: list[str] = []

    def __call__(self, key: str) -> None:
        with self._lock:
            self._keys.append(key)

    def take(self) -> list[str]:
        with self._lock:
            keys, self._keys = self._keys, []
        return keys

    def saw(self, key: str) -> bool:
        with self._lock:
            return key in self._keys


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def informer(store: Store, recorder: Recorder) -> Iterator[ResourceInformer[VirtualMachine]]:
    inf = ResourceInformer(store, VirtualMachine, recorder)
    inf.start(timeout=10)
    yield inf
    inf.close()


def test_reports_keys_on_create_update_status_and_delete(
    store: Store, informer: ResourceInformer[VirtualMachine], recorder: Recorder
) -> None:
    recorder.take()
    store.create(make_vm("web"))
    wait_for(lambda: recorder.saw("web"), 10, "create of web reported")
    wait_for(lambda: informer.get("web") is not None, 10, "web in the cache")

    recorder.take()
    store.apply(make_vm("web", vcpus=3))
    wait_for(lambda: recorder.saw("web"), 10, "update of web reported")
    wait_for(
        lambda: (vm := informer.get("web")) is not None and vm.spec.vcpus == 3,
        10,
        "updated spec in the cache",
    )

    recorder.take()
    store.write_status(VirtualMachine, "web", VirtualMachineStatus(phase=VMPhase.RUNNING))
    wait_for(lambda: recorder.saw("web"), 10, "status write reported")

    recorder.take()
    store.delete(VirtualMachine, "web")
    wait_for(lambda: recorder.saw("web"), 10, "delete reported")
    wait_for(lambda: informer.get("web") is None, 10, "web gone from the cache")
    assert informer.keys() == []
    # Every report named the object, never a child such as "status".
    assert set(recorder.take()) <= {"web"}


def test_get_returns_typed_objects_with_status_and_resource_version(
    store: Store, informer: ResourceInformer[VirtualMachine]
) -> None:
    store.create(make_vm("web", vcpus=2))
    store.write_status(
        VirtualMachine, "web", VirtualMachineStatus(phase=VMPhase.RUNNING, node="hv1")
    )

    def running() -> VirtualMachine | None:
        vm = informer.get("web")
        return vm if vm is not None and vm.status is not None else None

    vm = wait_for(running, 10, "web with its status in the cache")
    assert isinstance(vm, VirtualMachine)
    assert vm.spec.vcpus == 2
    assert vm.status is not None
    assert (vm.status.phase, vm.status.node) == (VMPhase.RUNNING, "hv1")
    stored = store.get(VirtualMachine, "web")
    assert vm.metadata.resource_version == stored.metadata.resource_version
    assert vm.metadata.generation == 1
    assert informer.get("ghost") is None


def test_placement_raw_follows_write_placement(
    store: Store, informer: ResourceInformer[VirtualMachine]
) -> None:
    store.create(make_vm("web"))
    store.write_placement("web", Placement(node="hv1", reason="scheduled"), epoch=None)
    wait_for(lambda: informer.placement_raw("web"), 10, "placement in the cache")
    assert informer.placement_raw("web")["node"] == "hv1"
    store.write_placement("web", Placement(node="hv2", reason="migrated"), epoch=None)
    wait_for(
        lambda: (informer.placement_raw("web") or {}).get("node") == "hv2",
        10,
        "moved placement in the cache",
    )
    # Placement is not status and not spec: the typed object does not carry it.
    vm = informer.get("web")
    assert vm is not None and vm.status is None
    assert informer.placement_raw("ghost") is None


def test_start_loads_existing_objects_and_watches_only_its_kind(
    store: Store, recorder: Recorder
) -> None:
    store.create(make_vm("b"))
    store.create(make_vm("a"))
    inf = ResourceInformer(store, VirtualMachine, recorder)
    inf.start(timeout=10)
    try:
        # start() returns only once the initial list is in the cache.
        assert inf.keys() == ["a", "b"]
        assert [vm.name for vm in inf.objects()] == ["a", "b"]
        network = parse_resource(
            {
                "apiVersion": "pvc/v1",
                "kind": "Network",
                "metadata": {"name": "lan"},
                "spec": {"type": "bridged", "vlan": 10},
            }
        )
        store.create(network)
        store.create(make_vm("c"))
        wait_for(lambda: recorder.saw("c"), 10, "create of c reported")
        assert not recorder.saw("lan")
        assert store.exists(Network, "lan")
        assert inf.keys() == ["a", "b", "c"]
    finally:
        inf.close()


def test_a_failing_listener_does_not_stop_the_others(store: Store, recorder: Recorder) -> None:
    def broken(_key: str) -> None:
        raise RuntimeError("listener bug")

    inf = ResourceInformer(store, VirtualMachine, broken)
    inf.add_listener(recorder)
    inf.start(timeout=10)
    try:
        store.create(make_vm("one"))
        wait_for(lambda: recorder.saw("one"), 10, "one reported despite a broken listener")
        store.create(make_vm("two"))
        wait_for(lambda: recorder.saw("two"), 10, "two reported after the failure")
    finally:
        inf.close()


def test_a_slow_load_is_waited_for_while_it_progresses_and_fails_once_it_stalls(
    store: Store,
) -> None:
    """A new primary's cache of 10,000 VMs loads for longer than any fixed deadline on a busy
    host: waiting goes on while znodes arrive, and fails only after ``stall`` s without."""
    informer = ResourceInformer(store, VirtualMachine)  # not started: we play its loader
    stop = threading.Event()

    def arrive() -> None:
        while not stop.wait(0.05):
            informer._loaded += 1

    feeder = threading.Thread(target=arrive, daemon=True)
    feeder.start()
    threading.Timer(1.2, stop.set).start()
    started = time.monotonic()
    with pytest.raises(TimeoutError, match=r"no progress for 0\.4s"):
        informer._wait_loaded(0.4)
    waited = time.monotonic() - started
    assert 1.2 <= waited < 3.0, waited
