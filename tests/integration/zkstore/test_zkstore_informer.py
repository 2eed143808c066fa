"""Informers: list + watch a kind and report the names of changed objects."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from localcluster.zookeeper import ZooKeeperServer
from schemas import (
    Network,
    Placement,
    VirtualMachine,
    VirtualMachineStatus,
    VMPhase,
    parse_resource,
)
from tests.helpers import session_lost, wait_for
from zkstore import Informer, ResourceInformer, Store, paths
from zkstore.codec import encode


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


def test_objects_read_long_ago_are_parsed_again_at_their_current_version(
    store: Store, recorder: Recorder
) -> None:
    # Only the last 2 objects read stay parsed (the primary keeps 2,048 of 10,000 VMs): an
    # older one comes back from the cached bytes, changes made since included.
    inf = ResourceInformer(store, VirtualMachine, recorder, keep_parsed=2)
    inf.start(timeout=10)
    try:
        for name in ("a", "b", "c"):
            store.create(make_vm(name, vcpus=1))
        wait_for(lambda: len(inf.keys()) == 3, 10, "three VMs in the cache")
        first = inf.get("a")
        assert first is not None and inf.get("a") is first  # kept while among the last 2
        inf.get("b")
        inf.get("c")  # "a" is now the oldest of three: no longer kept
        again = inf.get("a")
        assert again is not None and again is not first and again == first
        store.write_status(VirtualMachine, "b", VirtualMachineStatus(phase=VMPhase.RUNNING))
        wait_for(
            lambda: (vm := inf.get("b")) is not None and vm.status is not None,
            10,
            "b's status on the object parsed again",
        )
        assert [vm.metadata.name for vm in inf.objects()] == ["a", "b", "c"]
    finally:
        inf.close()


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
    informer._tree._pending = 1  # a read in flight that never ends
    stop = threading.Event()

    def arrive() -> None:
        while not stop.wait(0.05):
            informer._tree.progress += 1

    feeder = threading.Thread(target=arrive, daemon=True)
    feeder.start()
    threading.Timer(1.2, stop.set).start()
    started = time.monotonic()
    with pytest.raises(TimeoutError, match=r"no progress for 0\.4s"):
        informer._wait_loaded(0.4)
    waited = time.monotonic() - started
    assert 1.2 <= waited < 3.0, waited


def vcpus_of(informer: ResourceInformer[VirtualMachine], name: str) -> int | None:
    vm = informer.get(name)
    return vm.spec.vcpus if vm is not None else None


def test_start_reports_every_key_it_loads_and_holds_only_settled_state(
    store: Store, recorder: Recorder
) -> None:
    for name in ("a", "b", "c"):
        store.create(make_vm(name))
    store.write_status(VirtualMachine, "b", VirtualMachineStatus(phase=VMPhase.RUNNING))
    inf = ResourceInformer(store, VirtualMachine, recorder)
    inf.start(timeout=10)
    try:
        assert set(recorder.take()) == {"a", "b", "c"}
        assert inf.keys() == ["a", "b", "c"]
        assert inf.data("b", paths.STATUS)["phase"] == "Running"
        assert inf.data("a", paths.STATUS) is None
        # Per read slot bookkeeping lives only while reads are in flight.
        assert inf._tree._inflight == {} and inf._tree._applied == {}
    finally:
        inf.close()


def test_changes_made_during_the_load_end_in_the_cache(store: Store, recorder: Recorder) -> None:
    for i in range(150):
        store.create(make_vm(f"vm{i:03d}"))
    inf = ResourceInformer(store, VirtualMachine, recorder)
    inf._tree._window = 4  # a slow load: a few reads in flight at once
    loading = threading.Event()
    inf.add_listener(lambda _key: loading.set())

    def write_while_loading() -> None:
        loading.wait(10)
        store.apply(make_vm("vm149", vcpus=4))
        store.delete(VirtualMachine, "vm148")
        store.create(make_vm("late"))
        store.write_status(VirtualMachine, "vm147", VirtualMachineStatus(phase=VMPhase.RUNNING))

    writer = threading.Thread(target=write_while_loading)
    writer.start()
    try:
        inf.start(timeout=10)
        writer.join(10)
        truth = {o.name: o.spec.vcpus for o in store.list(VirtualMachine)}
        wait_for(
            lambda: {n: vcpus_of(inf, n) for n in list(inf.keys())} == truth, 10, "cache == store"
        )
        assert "vm148" not in list(inf.keys()) and truth["vm149"] == 4 and "late" in truth
        wait_for(lambda: inf.data("vm147", paths.STATUS), 10, "status written during the load")
        assert inf.version("vm149") == int(
            store.get(VirtualMachine, "vm149").metadata.resource_version or 0
        )
    finally:
        writer.join(10)
        inf.close()


def test_a_delete_drops_the_object_and_its_children(
    store: Store, informer: ResourceInformer[VirtualMachine], recorder: Recorder
) -> None:
    store.create(make_vm("web"))
    store.write_status(VirtualMachine, "web", VirtualMachineStatus(phase=VMPhase.RUNNING))
    store.write_placement("web", Placement(node="hv1", reason="scheduled"), epoch=None)
    wait_for(lambda: informer.placement_raw("web"), 10, "placement loaded")
    wait_for(lambda: informer.data("web", paths.STATUS), 10, "status loaded")
    recorder.take()
    store.client.delete(store.path(paths.resource("vms", "web")), recursive=True)
    wait_for(lambda: informer.keys() == [], 10, "web gone")
    wait_for(lambda: recorder.saw("web"), 10, "the delete reported")
    assert informer.get("web") is None and informer.version("web") is None
    assert informer.data("web", paths.STATUS) is None and informer.placement_raw("web") is None
    assert informer._tree._nodes == {} and informer._tree._kids == {}


@pytest.mark.parametrize("listed", [False, True], ids=["named-children", "listed-children"])
def test_children_appearing_and_going_are_followed_and_reported(
    store: Store, recorder: Recorder, listed: bool
) -> None:
    """Named children (a ResourceInformer: status, placement) are read directly, a missing
    one watched for creation; by default (listed) every child is found by listing the key."""
    informer = (
        Informer(store, paths.kind_root("vms"), recorder)
        if listed
        else ResourceInformer(store, VirtualMachine, recorder)
    )
    informer.start(timeout=10)
    try:
        store.create(make_vm("web"))
        wait_for(lambda: informer.data("web") is not None, 10, "web loaded")
        for child in (paths.STATUS, paths.PLACEMENT, *(["other"] if listed else [])):
            follow_one_child(store, informer, recorder, child)
        assert informer.keys() == ["web"]
        assert set(recorder.take()) <= {"web"}
    finally:
        informer.close()


def follow_one_child(store: Store, informer: Informer, recorder: Recorder, child: str) -> None:
    path = store.path(f"{paths.resource('vms', 'web')}/{child}")
    recorder.take()
    store.client.create(path, encode({"phase": "Running", "node": "hv1"}))
    wait_for(lambda: informer.data("web", child), 10, f"{child} appeared")
    wait_for(lambda: recorder.saw("web"), 10, f"{child} creation reported")
    recorder.take()
    store.client.set(path, encode({"phase": "Stopped", "node": "hv2"}))
    wait_for(
        lambda: (informer.data("web", child) or {}).get("node") == "hv2", 10, f"{child} changed"
    )
    wait_for(lambda: recorder.saw("web"), 10, f"{child} change reported")
    recorder.take()
    store.client.delete(path)
    wait_for(lambda: informer.data("web", child) is None, 10, f"{child} gone")
    wait_for(lambda: recorder.saw("web"), 10, f"{child} deletion reported")


def test_a_late_read_result_does_not_overwrite_a_newer_one(
    store: Store, informer: ResourceInformer[VirtualMachine], recorder: Recorder
) -> None:
    store.create(make_vm("web", vcpus=1))
    wait_for(lambda: vcpus_of(informer, "web") == 1, 10, "web loaded")
    tree = informer._tree
    with tree._lock:  # a read of web sent now, whose answer is held back
        tree._seq += 1
        late_seq = tree._seq
        tree._pending += 1
        tree._inflight["web"] = tree._inflight.get("web", 0) + 1
    store.apply(make_vm("web", vcpus=2))
    wait_for(lambda: vcpus_of(informer, "web") == 2, 10, "the newer read applied")
    newer = informer.version("web")
    recorder.take()
    stale = make_vm("web", vcpus=1).model_dump(mode="json")
    late = SimpleNamespace(get=lambda: (encode(stale), SimpleNamespace(mzxid=1)))
    tree._complete("web", late_seq, late)
    assert vcpus_of(informer, "web") == 2 and informer.version("web") == newer
    assert recorder.take() == []
    assert tree._inflight == {} and tree._pending == 0


def test_a_lost_session_reloads_and_reports_what_disappeared(
    store: Store,
    zookeeper: ZooKeeperServer,
    informer: ResourceInformer[VirtualMachine],
    recorder: Recorder,
) -> None:
    for name in ("stays", "goes", "loses-status"):
        store.create(make_vm(name))
    store.write_status(VirtualMachine, "loses-status", VirtualMachineStatus(phase=VMPhase.RUNNING))
    wait_for(lambda: informer.data("loses-status", paths.STATUS), 10, "all loaded")
    recorder.take()
    # Expire the session: every watch is gone.
    with session_lost(store, zookeeper.hosts) as other:
        other.delete(VirtualMachine, "goes")
        other.client.delete(other.path(paths.status("vms", "loses-status")))
        other.create(make_vm("new"))
        other.update(make_vm("stays", vcpus=4))
    wait_for(
        lambda: (
            informer.keys() == ["loses-status", "new", "stays"]
            and vcpus_of(informer, "stays") == 4
            and informer.data("loses-status", paths.STATUS) is None
        ),
        30,
        "the informer to reload after the session came back",
    )
    reported: set[str] = set()

    def all_reported() -> bool:
        reported.update(recorder.take())
        return {"goes", "loses-status", "new", "stays"} <= reported

    wait_for(all_reported, 10, "what changed and what disappeared reported")


@pytest.mark.parametrize("children", [(), None], ids=["no-children", "listed-children"])
def test_a_root_of_keys_without_children(
    store: Store, recorder: Recorder, children: tuple[str, ...] | None
) -> None:
    """The leases' root: keys with data, no children (told so, or found by listing)."""
    root = store.path(paths.LEASES_NODES)
    store.client.ensure_path(root)
    store.client.create(f"{root}/hv1", encode({"holder": "hv1"}))
    leases = Informer(store, paths.LEASES_NODES, recorder, children=children)
    leases.start(timeout=10)
    try:
        assert leases.keys() == ["hv1"] and leases.data("hv1") == {"holder": "hv1"}
        assert leases.version("hv1") == store.client.get(f"{root}/hv1")[1].mzxid
        recorder.take()
        store.client.create(f"{root}/hv2", encode({"holder": "hv2"}))
        wait_for(lambda: leases.keys() == ["hv1", "hv2"], 10, "hv2 loaded")
        store.client.delete(f"{root}/hv1")
        wait_for(lambda: leases.keys() == ["hv2"], 10, "hv1 gone")
        assert set(recorder.take()) == {"hv1", "hv2"}
    finally:
        leases.close()


def test_deleted_objects_leave_no_watch_behind(
    store: Store, informer: ResourceInformer[VirtualMachine]
) -> None:
    """A VM's status and placement read as missing before the VM does when it is deleted:
    what waits for them to appear must go with the VM, or every deleted VM would keep
    watches on the client and the server for the session's life."""
    names = [f"churn-{i}" for i in range(20)]
    for name in names:
        store.create(make_vm(name))
    wait_for(lambda: set(names) <= set(informer.keys()), 10, "all loaded")
    for name in names:
        store.write_status(VirtualMachine, name, VirtualMachineStatus(phase=VMPhase.RUNNING))
    wait_for(lambda: all(informer.data(n, paths.STATUS) for n in names), 10, "statuses")
    for name in names:
        store.client.delete(store.path(paths.resource("vms", name)), recursive=True)
    wait_for(lambda: not set(names) & set(informer.keys()), 10, "all dropped")
    root = store.path(paths.kind_root("vms"))

    def watched() -> list[str]:
        client = store.client
        paths_watched = [*client._data_watchers, *client._child_watchers]
        return [p for p in paths_watched if p.startswith(root + "/churn-")]

    wait_for(lambda: not watched(), 10, "no watch left on a deleted VM")


def test_a_new_object_is_listed_not_read_child_by_child(
    store: Store, informer: ResourceInformer[VirtualMachine], recorder: Recorder
) -> None:
    """A VM created after the load has no status or placement yet: the informer reads it
    alone, neither listing the root (the root's persistent watch reported it) nor the VM
    nor reading children that are not there (issue 16); the watch reports each child as it
    is created, and it is followed as ever."""
    tree = informer._tree
    before = tree.requests
    store.create(make_vm("fresh"))
    wait_for(lambda: informer.data("fresh") is not None, 10, "fresh loaded")
    wait_for(lambda: tree._settled(), 10, "no read in flight")
    assert tree.requests - before == 1
    store.write_status(VirtualMachine, "fresh", VirtualMachineStatus(phase=VMPhase.RUNNING))
    wait_for(lambda: informer.data("fresh", paths.STATUS), 10, "its status followed")
    store.write_placement("fresh", Placement(node="hv1"), epoch=None)
    wait_for(lambda: informer.data("fresh", paths.PLACEMENT), 10, "its placement followed")


def test_a_new_key_without_children_is_read_once(store: Store) -> None:
    """A node's index entry has no children: a new one costs one read, no listing."""
    informer = Informer(store, paths.node_index("hv1"), Recorder(), children=())
    store.client.ensure_path(store.path(paths.node_index("hv1")))
    informer.start(timeout=10)
    try:
        store.create(make_vm("web"))
        tree = informer._tree
        before = tree.requests
        store.write_placement("web", Placement(node="hv1"), epoch=None)
        wait_for(lambda: informer.data("web") is not None, 10, "the entry loaded")
        wait_for(lambda: tree._settled(), 10, "no read in flight")
        assert tree.requests - before == 1  # the entry's read: nothing listed
    finally:
        informer.close()


def test_children_not_followed_are_neither_read_nor_watched(store: Store) -> None:
    """An informer of statuses only (the API's) lists a new VM to learn of its status, and
    leaves the placement that listing also shows alone."""
    recorder = Recorder()
    informer = Informer(store, paths.kind_root("vms"), recorder, children=(paths.STATUS,))
    informer.start(timeout=10)
    try:
        store.create(make_vm("web"))
        wait_for(lambda: informer.data("web") is not None, 10, "web loaded")
        store.write_placement("web", Placement(node="hv1"), epoch=None)
        store.write_status(VirtualMachine, "web", VirtualMachineStatus(phase=VMPhase.RUNNING))
        wait_for(lambda: informer.data("web", paths.STATUS), 10, "its status followed")
        assert informer.data("web", paths.PLACEMENT) is None
        placement = store.path(f"{paths.resource('vms', 'web')}/{paths.PLACEMENT}")
        assert placement not in store.client._data_watchers
    finally:
        informer.close()
