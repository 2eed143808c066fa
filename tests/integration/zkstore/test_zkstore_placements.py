"""zkstore/placements.py against a real ZooKeeper: new placements written together, each
VM with the outcome a single write would give it."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from schemas import Placement, VirtualMachine, parse_resource
from zkstore import AlreadyPlaced, EpochMoved, NotFound, Store, paths
from zkstore.placements import GroupCommit, place_new


def create_vm(store: Store, name: str) -> None:
    obj = parse_resource(
        {
            "apiVersion": "pvc/v1",
            "kind": "VirtualMachine",
            "metadata": {"name": name},
            "spec": {"memory": "64Mi"},
        }
    )
    assert isinstance(obj, VirtualMachine)
    store.create(obj)


def placed(store: Store, vm: str) -> tuple[str | None, bool]:
    """Where the placement says, and whether that node's index has the entry."""
    placement = store.read_placement(vm)
    node = placement.node if placement else None
    entry = node is not None and store.node_index_entry(node, vm) is not None
    return node, entry


def test_concurrent_writes_share_transactions(store: Store) -> None:
    epoch = store.bump_epoch("test")
    names = [f"vm{i:03d}" for i in range(120)]
    for name in names:
        create_vm(store, name)
    group = GroupCommit(store, epoch)
    nodes = ["hv1", "hv2", "hv3"]
    with ThreadPoolExecutor(max_workers=24) as pool:
        list(
            pool.map(
                lambda i: group.write(names[i], Placement(node=nodes[i % 3], epoch=epoch)),
                range(len(names)),
            )
        )
    for i, name in enumerate(names):
        assert placed(store, name) == (nodes[i % 3], True)
    # Every transaction is one zxid: fewer zxids than VMs means they were written together.
    zxids = {store.client.exists(store.path(paths.placement(name))).czxid for name in names}
    assert len(zxids) < len(names) / 2, f"{len(zxids)} transactions for {len(names)} VMs"


def test_a_vm_placed_or_deleted_meanwhile_fails_alone(store: Store) -> None:
    epoch = store.bump_epoch("test")
    for name in ("a", "b", "c"):
        create_vm(store, name)
    store.write_placement("b", Placement(node="hv9", epoch=epoch), epoch=epoch)
    group = GroupCommit(store, epoch)
    outcomes: dict[str, BaseException | None] = {}
    start = threading.Barrier(4)

    def write(vm: str) -> None:
        start.wait()
        try:
            group.write(vm, Placement(node="hv1", epoch=epoch))
            outcomes[vm] = None
        except (AlreadyPlaced, NotFound) as exc:
            outcomes[vm] = exc

    threads = [threading.Thread(target=write, args=(vm,)) for vm in ("a", "b", "c", "gone")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert outcomes["a"] is None and outcomes["c"] is None
    assert isinstance(outcomes["b"], AlreadyPlaced) and outcomes["b"].node == "hv9"
    assert isinstance(outcomes["gone"], NotFound)
    assert placed(store, "a") == ("hv1", True)
    assert placed(store, "b") == ("hv9", True)  # the earlier placement stands
    assert store.node_index_entry("hv1", "b") is None
    assert store.node_index_entry("hv1", "gone") is None


def test_a_deposed_primary_writes_nothing(store: Store) -> None:
    epoch = store.bump_epoch("old")
    for name in ("x", "y"):
        create_vm(store, name)
    store.bump_epoch("new")
    with pytest.raises(EpochMoved):
        place_new(store, [("x", Placement(node="hv1")), ("y", Placement(node="hv2"))], epoch=epoch)
    with pytest.raises(EpochMoved):
        GroupCommit(store, epoch).write("x", Placement(node="hv1"))
    assert placed(store, "x") == (None, False)
    assert placed(store, "y") == (None, False)
