"""api/cache.py against a real ZooKeeper: a change of only an object's status re-reads only
the status (issue 16), and the cached object is exactly what a full read builds."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from api.cache import KindCache
from schemas import VirtualMachine, VirtualMachineStatus, VMPhase
from tests.helpers import apply_vm, wait_for
from zkstore import Store


@pytest.fixture
def cache(store: Store) -> Iterator[KindCache]:
    the_cache = KindCache(store, VirtualMachine, ring_size=100)
    the_cache.start(10.0)
    yield the_cache
    the_cache.close()


def full_build(cache: KindCache, name: str) -> dict[str, object]:
    built = KindCache._build(cache, name)
    assert built is not None
    return built[0].wire()


def test_a_status_change_is_cached_as_a_full_read_would_build_it(
    store: Store, cache: KindCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    apply_vm(store, "web")
    wait_for(lambda: cache.get("web") is not None, 10, "web cached")
    builds: list[str] = []
    original = cache._build

    def counted(name: str) -> object:
        builds.append(name)
        return original(name)

    monkeypatch.setattr(cache, "_build", counted)
    for phase, node in ((VMPhase.STARTING, "n1"), (VMPhase.RUNNING, "n1"), (VMPhase.RUNNING, None)):
        store.write_status(VirtualMachine, "web", VirtualMachineStatus(phase=phase, node=node))
        wait_for(
            lambda p=phase, n=node: (
                (cache.get("web") or {}).get("status")
                == VirtualMachineStatus(phase=p, node=n).wire()
            ),
            10,
            f"status {phase} cached",
        )
        assert cache.get("web") == full_build(cache, "web")
    assert builds == []  # only the status was read and validated, three times
    # A spec change after status-only ones: the spec is read again too.
    apply_vm(store, "web", memory="128Mi")
    wait_for(
        lambda: (cache.get("web") or {}).get("spec", {}).get("memory") == "128Mi",
        10,
        "the new spec cached",
    )
    assert cache.get("web") == full_build(cache, "web")
    assert builds == ["web"]


def test_an_unreadable_status_leaves_the_spec_served(store: Store, cache: KindCache) -> None:
    apply_vm(store, "db")
    store.write_status(VirtualMachine, "db", VirtualMachineStatus(phase=VMPhase.RUNNING))
    wait_for(lambda: "status" in (cache.get("db") or {}), 10, "db's status cached")
    path = store.path("/resources/vms/db/status")
    store.client.set(path, b'{"phase": 17}')
    wait_for(lambda: "status" not in (cache.get("db") or {"status": 1}), 10, "status dropped")
    assert (cache.get("db") or {})["metadata"]["name"] == "db"
