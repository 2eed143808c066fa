"""Renaming a stopped VM against a real ZooKeeper: every znode keyed by its name moves in
one transaction (spec, status, placement, node-index entry, holders, disk records, console,
events); a VM that may run is refused with the reason; a change made between the reads
and the transaction fails it, and nothing is lost or half-moved."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from schemas import (
    Placement,
    RunStrategy,
    VirtualMachine,
    VirtualMachineStatus,
    VMPhase,
    parse_resource,
)
from schemas.vm import derived_mac
from tests.helpers import wait_for
from zkstore import AlreadyExists, Conflict, DiskRecord, Disks, Holders, NotFound, Store, paths
from zkstore.console import VMOutputs
from zkstore.events import EventLog
from zkstore.rename import RenameRefused, plan_rename, rename_vm

DISK = {"name": "root", "pool": "shared", "size": "64Mi"}


def stopped_vm(store: Store, name: str = "old", **spec: Any) -> VirtualMachine:
    """A VM as a node leaves it once halted: placed on node1, node1 its holder, Stopped,
    with a created volume, a console tail and events."""
    body = {"memory": "64Mi", "runStrategy": "Halted", "disks": [DISK], **spec}
    doc = {"apiVersion": "pvc/v1", "kind": "VirtualMachine", "metadata": {"name": name}}
    vm = store.create(VirtualMachine.model_validate({**doc, "spec": body}))
    # Migrated here from node2 once (unmigrate would return it there): no move under way.
    moved = Placement(node="node1", reason="Migrated", migration="node2")
    store.write_placement(name, moved, epoch=None)
    store.write_status(
        VirtualMachine, name, VirtualMachineStatus(phase=VMPhase.STOPPED, node="node1")
    )
    Holders(store).ensure(name, "node1")
    record = DiskRecord(
        name, "root", "node1", "shared/old_root.qcow2", None, "creating", pool="shared",
        pool_type="shared", volume="old_root.qcow2", format="qcow2",
    )  # fmt: skip
    disks = Disks(store)
    disks.finish(name, "root", "node1", size=64 << 20, fresh=disks.begin(
        name, "root", "node1", record.path, None, record
    ))  # fmt: skip
    VMOutputs(store).write_console(name, "node1", b"login: ", 7)
    return vm


def events_of(store: Store, name: str, count: int) -> list[str]:
    log = EventLog(store)
    return wait_for(
        lambda: (
            [e.reason for e in log.list("VirtualMachine", name)]
            if len(log.list("VirtualMachine", name)) >= count
            else []
        ),
        10,
        f"{count} events of {name}",
    )


def test_a_rename_moves_everything_keyed_by_the_name(store: Store) -> None:
    before = stopped_vm(store, nics=[{"network": "lan"}])
    EventLog(store).record("VirtualMachine", "old", "VolumeCreated", "volume made")
    EventLog(store).record("VirtualMachine", "other", "Started", "not this one")
    assert events_of(store, "old", 1) == ["VolumeCreated"]

    renamed = rename_vm(store, "old", "new")

    assert renamed.name == "new" and renamed.metadata.uid == before.metadata.uid
    assert renamed.spec.disks == before.spec.disks
    assert renamed.spec.run_strategy == RunStrategy.HALTED
    # The NIC keeps the MAC the old name gave it.
    assert renamed.spec.nics[0].mac == derived_mac("old", 0)
    assert renamed.status is not None and renamed.status.phase == VMPhase.STOPPED
    placement = store.read_placement("new")
    assert placement is not None and placement.node == "node1"
    assert store.node_index_entry("node1", "new", sync=True) == placement
    assert Holders(store).read("new") == {"node1"}
    record = Disks(store).of("new")["root"]
    assert (record.volume, record.path, record.created) == (
        "old_root.qcow2",
        "shared/old_root.qcow2",
        True,
    ), "the volume stays linked under its own name"
    console = VMOutputs(store).read_console("new")
    assert console is not None and console.data == b"login: "
    assert [e.reason for e in EventLog(store).list("VirtualMachine", "new")] == ["VolumeCreated"]
    assert [e.name for e in EventLog(store).list("VirtualMachine")] == ["new", "other"]

    # Nothing is left under the old name.
    for relative in (
        paths.resource("vms", "old"),
        paths.node_index_entry("node1", "old"),
        paths.holders("old"),
        paths.vm_disks("old"),
        "/consoles/old",
    ):
        assert store.client.exists(store.path(relative)) is None, relative


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (lambda s: s.mutate_spec(VirtualMachine, "old", _run), "runStrategy is Always"),
        (
            lambda s: s.write_status(
                VirtualMachine, "old", VirtualMachineStatus(phase=VMPhase.RUNNING, node="node1")
            ),
            "it is Running, not Stopped",
        ),
        (lambda s: Holders(s).ensure("old", "node2"), r"node\(s\) node2 may still hold its domain"),
        (
            lambda s: s.client.create(s.path(paths.volume_deletion("old"))),
            "volumes of a deleted VM of this name are being deleted",
        ),
        (
            # A record left by a crash between the two deletes that clear it.
            lambda s: s.client.create(s.path(paths.holder("old", "node1")) + "/to-node2"),
            r"node node1's hold on it still records a live migration \(to-node2\)",
        ),
    ],
    ids=["runs", "reported-running", "held-elsewhere", "volumes-deleting", "stale-record"],
)
def test_a_vm_that_may_run_is_refused_with_the_reason(
    store: Store, change: Callable[[Store], Any], why: str
) -> None:
    stopped_vm(store)
    change(store)
    with pytest.raises(RenameRefused, match=why):
        rename_vm(store, "old", "new")
    assert store.exists(VirtualMachine, "old") and not store.exists(VirtualMachine, "new")


def _run(vm: VirtualMachine) -> None:
    vm.spec.run_strategy = RunStrategy.ALWAYS


def test_a_concurrent_change_fails_the_rename_and_loses_nothing(store: Store) -> None:
    stopped_vm(store)
    for change in (
        lambda: store.mutate_spec(VirtualMachine, "old", _label),
        lambda: store.write_status(
            VirtualMachine, "old", VirtualMachineStatus(phase=VMPhase.STOPPED, reason="again")
        ),
        lambda: Holders(store).ensure("old", "node2"),
    ):
        plan = plan_rename(store, "old", "new")
        change()
        with pytest.raises(Conflict, match="changed while it was being renamed"):
            plan.commit()
        assert not store.exists(VirtualMachine, "new")
        assert store.client.exists(store.path(paths.holders("new"))) is None
        assert Disks(store).of("new") == {}
    vm = store.get(VirtualMachine, "old")
    assert vm.metadata.labels == {"edited": "yes"}, "the concurrent spec change is kept"
    assert vm.status is not None and vm.status.reason == "again"
    assert Disks(store).of("old")["root"].created


def _label(vm: VirtualMachine) -> None:
    vm.metadata.labels = {"edited": "yes"}


def test_unknown_taken_and_legacy_disks(store: Store) -> None:
    with pytest.raises(NotFound):
        rename_vm(store, "nope", "new")
    stopped_vm(store)
    stopped_vm(store, "taken")
    with pytest.raises(AlreadyExists):
        rename_vm(store, "old", "taken")
    legacy = {"apiVersion": "pvc/v1", "kind": "VirtualMachine", "metadata": {"name": "legacy"}}
    spec = {"memory": "64Mi", "runStrategy": "Halted", "disks": [{"name": "d", "size": "1Gi"}]}
    store.create(parse_resource({**legacy, "spec": spec}))
    store.write_status(VirtualMachine, "legacy", VirtualMachineStatus(phase=VMPhase.STOPPED))
    with pytest.raises(RenameRefused, match="images in the nodes' diskDir"):
        rename_vm(store, "legacy", "new")


def test_a_vm_being_deleted_is_not_renamed(store: Store) -> None:
    stopped_vm(store)
    store.mark_deleting(VirtualMachine, "old")  # Terminating: its node removes the domain
    with pytest.raises(RenameRefused, match="being deleted"):
        rename_vm(store, "old", "new")
    assert store.exists(VirtualMachine, "old") and not store.exists(VirtualMachine, "new")
