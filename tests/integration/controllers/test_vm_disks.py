"""A VM's disk is created once and never replaced by a blank one (issue 10, "Disks"): the
node VM controllers against a real ZooKeeper and libvirt's test driver (placements written
by hand, as the primary would), and the scheduler placing a VM only where its disks are."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from controllers.scheduler import Scheduler
from controllers.vm_controller import VMController
from hypervisor import LibvirtDriver, write_test_host_xml
from schemas import (
    DaemonState,
    Node,
    NodeResources,
    NodeStatus,
    ObjectMeta,
    Placement,
    VirtualMachine,
    VirtualMachineStatus,
    set_condition,
)
from tests import helpers
from tests.helpers import node_of, wait_for
from zkstore import Disks, Store, paths

GIB = 2**30

NodeFactory = Callable[[str, Path, bool], VMController]


@pytest.fixture
def start_node(
    store: Store, running: Callable[[VMController], VMController], tmp_path: Path
) -> NodeFactory:
    """A node's VM controller on its own simulated hypervisor, with ``disk_dir``."""

    def start(name: str, disk_dir: Path, shared: bool) -> VMController:
        uri = write_test_host_xml(tmp_path / f"{name}.xml", 4096, 4)
        return running(
            VMController(
                store,
                LibvirtDriver(uri),
                name,
                disk_dir=str(disk_dir),
                shared_disk_dir=shared,
                workers=2,
            )
        )

    return start


def apply_vm(store: Store, name: str, **spec: Any) -> None:
    helpers.apply_vm(store, name, **{"shutdownTimeout": "2s", **spec})


def status_of(store: Store, vm: str) -> VirtualMachineStatus:
    return VirtualMachineStatus.model_validate(store.read_status(VirtualMachine, vm) or {})


def running_on(store: Store, vm: str, node: str) -> bool:
    status = status_of(store, vm)
    return status.phase == "Running" and status.node == node


def ready_message(status: VirtualMachineStatus) -> str:
    return next((c.message or "" for c in status.conditions if c.type == "Ready"), "")


def test_a_vm_moved_to_a_node_without_its_disk_stays_pending_and_nothing_is_created(
    store: Store, start_node: NodeFactory, tmp_path: Path
) -> None:
    n1 = start_node("n1", tmp_path / "n1-disks", False)
    n2 = start_node("n2", tmp_path / "n2-disks", False)
    apply_vm(store, "db", disks=[{"name": "data", "size": "16Mi"}])
    store.write_placement("db", Placement(node="n1"), epoch=None)
    wait_for(lambda: running_on(store, "db", "n1"), 20, "db Running on n1")
    image = tmp_path / "n1-disks" / "db-data.qcow2"
    assert image.is_file()
    record = Disks(store).read("db", "data")
    assert record is not None
    assert (record.node, record.path, record.shared, record.state) == (
        "n1",
        str(image),
        None,
        "created",
    )

    store.write_placement("db", Placement(node="n2"), epoch=None)
    status = wait_for(
        lambda: (s := status_of(store, "db")).reason == "DiskMissing" and s,
        20,
        "db Pending on n2 with DiskMissing",
    )
    assert (status.phase, status.node) == ("Pending", "n2")
    message = ready_message(status)
    assert "disk data" in message and "node n2" in message and "n1" in message, message
    # Nothing was created in n2's folder, nor defined there.
    assert not (tmp_path / "n2-disks").exists() or not any((tmp_path / "n2-disks").iterdir())
    assert n2.driver.info("db") is None
    assert Disks(store).read("db", "data") == record

    # Back where its disk is: it runs again, on the image it had.
    before = image.stat()
    store.write_placement("db", Placement(node="n1"), epoch=None)
    wait_for(lambda: running_on(store, "db", "n1"), 20, "db Running on n1 again")
    after = image.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert n1.driver.info("db") is not None


def test_with_a_shared_folder_the_move_works_on_the_same_image(
    store: Store, start_node: NodeFactory, tmp_path: Path
) -> None:
    shared = tmp_path / "shared-disks"
    start_node("n1", shared, True)
    n2 = start_node("n2", shared, True)
    apply_vm(store, "web", disks=[{"name": "data", "size": "16Mi"}])
    store.write_placement("web", Placement(node="n1"), epoch=None)
    wait_for(lambda: running_on(store, "web", "n1"), 20, "web Running on n1")
    image = shared / "web-data.qcow2"
    before = image.stat()
    record = Disks(store).read("web", "data")
    assert record is not None
    assert (record.node, record.shared, record.state) == ("n1", str(shared), "created")

    store.write_placement("web", Placement(node="n2"), epoch=None)
    wait_for(lambda: running_on(store, "web", "n2"), 20, "web Running on n2")
    after = image.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert [p.name for p in shared.iterdir()] == ["web-data.qcow2"]
    assert n2.driver.info("web") is not None
    assert Disks(store).read("web", "data") == record  # created once, by n1


def test_a_creating_record_of_another_node_is_waited_for(
    store: Store, start_node: NodeFactory, tmp_path: Path
) -> None:
    """A node that died half-way through creating: the next one creates nothing."""
    shared = tmp_path / "shared-disks"
    Disks(store).begin("vm1", "root", "gone", str(shared / "vm1-root.qcow2"), str(shared))
    start_node("n1", shared, True)
    apply_vm(store, "vm1", disks=[{"name": "root", "size": "16Mi"}])
    store.write_placement("vm1", Placement(node="n1"), epoch=None)
    status = wait_for(
        lambda: (s := status_of(store, "vm1")).reason == "DiskMissing" and s, 20, "DiskMissing"
    )
    assert status.phase == "Pending"
    assert "being created on node gone" in ready_message(status)
    assert not (shared / "vm1-root.qcow2").exists()


# -- the scheduler ------------------------------------------------------------------------


def add_node(store: Store, name: str, disk_dir: str, shared: bool, memory_gib: int = 8) -> None:
    store.create(Node(metadata=ObjectMeta(name=name)))
    status = NodeStatus(
        daemon_state=DaemonState.RUN,
        resources=NodeResources(memory_total=memory_gib * GIB),
        conditions=set_condition([], "Ready", True, "HeartbeatOK"),
        disk_dir=disk_dir,
        shared_disk_dir=shared,
    )
    store.write_status(Node, name, status)
    store.client.create(store.path(paths.node_lease(name)), b"{}", ephemeral=True, makepath=True)


def created_disk(store: Store, vm: str, node: str, path: str, shared: str | None) -> None:
    disks = Disks(store)
    disks.begin(vm, "data", node, path, shared)
    disks.finish(vm, "data", node)


def test_a_vm_bound_to_a_nodes_own_disk_is_placed_only_there(
    store: Store, scheduler: Scheduler
) -> None:
    add_node(store, "n1", "/d", False, memory_gib=2)
    add_node(store, "n2", "/d", True, memory_gib=64)  # same path, but n1's is its own
    add_node(store, "n3", "/d", False, memory_gib=64)
    created_disk(store, "bound", "n1", "/d/bound-data.qcow2", None)
    apply_vm(store, "bound", memory="1Gi", disks=[{"name": "data", "size": "1Gi"}])
    assert wait_for(lambda: node_of(store, "bound"), 10, "bound placed") == "n1"
    # A VM without disk records goes by the policy (most free memory).
    apply_vm(store, "free", memory="1Gi", disks=[{"name": "data", "size": "1Gi"}])
    assert wait_for(lambda: node_of(store, "free"), 10, "free placed") in ("n2", "n3")


def test_a_shared_disk_is_placed_on_nodes_sharing_its_folder(
    store: Store, scheduler: Scheduler
) -> None:
    add_node(store, "n1", "/s", True, memory_gib=2)
    add_node(store, "n2", "/other", True, memory_gib=64)
    add_node(store, "n3", "/s", True, memory_gib=32)
    created_disk(store, "web", "n1", "/s/web-data.qcow2", "/s")
    apply_vm(store, "web", memory="1Gi", disks=[{"name": "data", "size": "1Gi"}])
    assert wait_for(lambda: node_of(store, "web"), 10, "web placed") == "n3"


def test_no_node_reaching_the_disk_leaves_the_vm_unplaced_naming_the_disk(
    store: Store, scheduler: Scheduler
) -> None:
    add_node(store, "n2", "/d", False, memory_gib=64)
    created_disk(store, "orphan", "n1", "/d/orphan-data.qcow2", None)
    apply_vm(store, "orphan", memory="1Gi", disks=[{"name": "data", "size": "1Gi"}])
    status = wait_for(
        lambda: (s := status_of(store, "orphan")).reason == "Unschedulable" and s,
        10,
        "orphan unschedulable",
    )
    scheduled = next(c for c in status.conditions if c.type == "Scheduled")
    assert "n2: does not reach disk data" in (scheduled.message or ""), scheduled.message
    assert node_of(store, "orphan") is None
