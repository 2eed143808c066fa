"""Deleting a VM (zkstore/deletion.py): Terminating until the node that holds its domain has
shut it down (ACPI, forced off at shutdownTimeout) and undefined it; force at once; never
dropped while a dead, unfenced node may hold it. In process against a real ZooKeeper: the
primary's scheduler, two nodes' VM controllers on the fault-injecting hypervisor (whose
guests can ignore ACPI), the API on uvicorn and the real pvcctl. What runs where is read
from the hypervisors, never from status."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.config import Settings
from controllers.fencing import FenceController
from controllers.scheduler import Scheduler
from controllers.vm_controller import VMController
from hypervisor import DomainState, HypervisorWorld, Timings, write_test_host_xml
from localcluster.zookeeper import ZooKeeperServer
from schemas import (
    DaemonState,
    Node,
    NodeResources,
    NodeStatus,
    ObjectMeta,
    VirtualMachine,
    set_condition,
    verbs,
)
from tests.helpers import holds_for, wait_for
from tests.integration.api.api_helpers import live_server
from zkstore import DiskRecord, Disks, Holders, Store, paths
from zkstore.events import EventLog

PVCCTL = str(Path(sys.executable).parent / "pvcctl")
stopped: set[str] = set()
"""Nodes whose controller a test stopped (its daemon died)."""
UP = (DomainState.RUNNING, DomainState.PAUSED, DomainState.SHUTTING_DOWN)


@dataclass
class Cluster:
    store: Store
    world: HypervisorWorld
    scheduler: Scheduler
    nodes: dict[str, VMController]
    url: str
    home: Path

    def api(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.request(method, f"{self.url}/api/v1{path}", timeout=10, **kwargs)

    def pvcctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PVC_")}
        env.update(PVC_SERVER=self.url, XDG_CONFIG_HOME=str(self.home))
        return subprocess.run([PVCCTL, *args], capture_output=True, text=True, env=env, timeout=60)

    def run_vm(self, name: str, node: str, shutdown_timeout: str, ignore_acpi: bool) -> None:
        """A VM running on ``node`` (as its hypervisor says), whose guest may ignore ACPI."""
        self.world.ignore_acpi(name, ignore_acpi)
        manifest = {
            "apiVersion": "pvc/v1",
            "kind": "VirtualMachine",
            "metadata": {"name": name},
            "spec": {
                "memory": "64Mi",
                "shutdownTimeout": shutdown_timeout,
                "placement": {"nodes": [node]},
            },
        }
        assert self.api("POST", "/vms", json=manifest).status_code == 201
        wait_for(lambda: self.up(node, name), 20, f"{name} running on {node}")

    def up(self, node: str, vm: str) -> bool:
        return self.world.domain_state(node, vm) in UP

    def exists(self, vm: str) -> bool:
        return self.store.exists(VirtualMachine, vm)

    def reasons(self, vm: str) -> list[str]:
        return [e.reason for e in EventLog(self.store).list("VirtualMachine", vm)]


def add_node(store: Store, name: str) -> None:
    store.create(Node(metadata=ObjectMeta(name=name)))
    status = NodeStatus(
        daemon_state=DaemonState.RUN,
        resources=NodeResources(memory_total=4 * 2**30),
        conditions=set_condition([], "Ready", True, "HeartbeatOK"),
    )
    store.write_status(Node, name, status)
    store.client.create(store.path(paths.node_lease(name)), b"{}", ephemeral=True, makepath=True)


@pytest.fixture(scope="module")
def cluster(
    zookeeper: ZooKeeperServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("vm-delete")
    store = Store(zookeeper.hosts, f"/delete-{uuid.uuid4().hex[:10]}", timeout=6.0)
    store.start()
    world = HypervisorWorld(Timings(start=0.05, shutdown=0.1, destroy=0.05))
    nodes = {}
    for name in ("n1", "n2"):
        add_node(store, name)
        uri = write_test_host_xml(tmp / f"{name}.xml", 4096, 4)
        nodes[name] = VMController(
            store, world.driver(name, uri), name, disk_dir=str(tmp), workers=2
        )
        nodes[name].start()
    scheduler = Scheduler(store, store.bump_epoch("test"))
    scheduler.start()
    try:
        with live_server(store, Settings(root=store.root)) as url:
            yield Cluster(store, world, scheduler, nodes, url, tmp)
    finally:
        scheduler.stop()
        for name, controller in nodes.items():
            if name not in stopped:
                controller.stop()
            controller.driver.close()
        world.close()
        store.stop()


def test_a_running_vm_is_shut_down_gracefully_before_it_and_its_volumes_go(
    cluster: Cluster,
) -> None:
    cluster.run_vm("grace", "n1", "2s", ignore_acpi=True)
    # A volume of it in a pool, as the node that created it recorded it.
    disks = Disks(cluster.store)
    volume = DiskRecord("grace", "data", "n1", "/p/grace_data", None, "created", "p", "shared")
    disks.begin("grace", "data", "n1", volume.path, None, mine=volume)

    asked = time.monotonic()
    answer = cluster.api("DELETE", "/vms/grace", params={"deleteVolumes": "true"})
    assert answer.status_code == 200, answer.text
    meta = answer.json()["metadata"]
    assert meta["deletionTimestamp"] and meta["finalizers"] == [verbs.DOMAIN_FINALIZER]

    # The guest ignores ACPI: its domain stays up until shutdownTimeout, and the object
    # (with its volume untouched) stays as long as the domain exists.
    while cluster.up("n1", "grace") or "grace" in cluster.world.held_by("n1"):
        assert cluster.exists("grace"), "the object went while its domain was still there"
        assert not disks.deletion_pending("grace"), "volumes marked while the domain is up"
        assert time.monotonic() - asked < 15, "the domain was never forced off"
        time.sleep(0.05)
    off_after = time.monotonic() - asked
    assert off_after >= 1.8, f"forced off after {off_after:.2f}s, before shutdownTimeout 2s"
    wait_for(lambda: not cluster.exists("grace"), 10, "the object to go once its domain is gone")
    marked = disks.read("grace", "data")
    assert marked is not None and marked.deleting and disks.deletion_pending("grace")
    # "Deleted" is recorded after the object went, without waiting for ZooKeeper's answer
    # (an event never slows the action it tells of): read the log once it has arrived.
    wanted = {"Terminating", "ForcedOff", "DomainRemoved", "Deleted"}
    wait_for(lambda: wanted <= set(cluster.reasons("grace")), 10, f"the events {sorted(wanted)}")
    reasons = cluster.reasons("grace")
    assert wanted <= set(reasons), reasons
    assert cluster.world.violations == []


def test_a_terminating_vm_refuses_changes_but_not_the_removal_of_its_finalizer(
    cluster: Cluster,
) -> None:
    cluster.run_vm("held", "n1", "60s", ignore_acpi=True)
    assert cluster.api("DELETE", "/vms/held").status_code == 200
    wait_for(
        lambda: (
            (cluster.api("GET", "/vms/held").json().get("status") or {}).get("phase")
            == "Terminating"
        ),
        10,
        "status Terminating",
    )
    merge = {"Content-Type": "application/merge-patch+json"}
    refused = [
        cluster.api("PATCH", "/vms/held", json={"spec": {"memory": "128Mi"}}, headers=merge),
        cluster.api("PATCH", "/vms/held", json={"metadata": {"labels": {"a": "b"}}}, headers=merge),
        cluster.api("POST", "/vms/held/restart"),
        cluster.api("POST", "/vms/held/migrate", json={"node": "n2", "force": True}),
    ]
    for answer in refused:
        assert answer.status_code == 409, answer.text
        assert "is being deleted (Terminating" in answer.json()["message"]
    assert cluster.exists("held") and cluster.up("n1", "held")

    # Removing the finalizer is allowed, and with none left the object goes at once; its
    # node then destroys the domain it no longer sees (as after a force).
    answer = cluster.api("PATCH", "/vms/held", json={"metadata": {"finalizers": []}}, headers=merge)
    assert answer.status_code == 200, answer.text
    assert not cluster.exists("held")
    wait_for(lambda: not cluster.world.holders("held"), 10, "the domain destroyed")


def test_force_deletes_at_once_and_the_node_destroys_the_domain(cluster: Cluster) -> None:
    cluster.run_vm("forced", "n1", "60s", ignore_acpi=True)
    asked = time.monotonic()
    answer = cluster.api("DELETE", "/vms/forced", params={"force": "true"})
    assert answer.status_code == 200, answer.text
    assert not cluster.exists("forced")
    wait_for(lambda: not cluster.world.holders("forced"), 10, "the domain destroyed")
    assert time.monotonic() - asked < 10  # far from its 60s shutdownTimeout


def test_a_vm_on_a_dead_unfenced_node_stays_terminating_until_the_node_is_fenced(
    cluster: Cluster,
) -> None:
    store, world = cluster.store, cluster.world
    cluster.run_vm("stranded", "n2", "1s", ignore_acpi=False)
    # n2's daemon dies: it acts no more, its lease goes, the primary marks it dead.
    cluster.nodes["n2"].stop()
    stopped.add("n2")
    store.client.delete(store.path(paths.node_lease("n2")))
    store.update_status(
        Node,
        "n2",
        lambda raw: NodeStatus.model_validate(raw).model_copy(
            update={"daemon_state": DaemonState.DEAD}
        ),
    )
    assert cluster.api("DELETE", "/vms/stranded").status_code == 200
    wait_for(
        lambda: (
            (store.read_status(VirtualMachine, "stranded") or {}).get("reason") == "WaitingForFence"
        ),
        10,
        "the primary to say it waits for the fence",
    )
    holds_for(
        lambda: cluster.exists("stranded") and cluster.up("n2", "stranded"),
        1.5,
        "the VM of the unfenced node kept",
    )

    # The fence: n2 powered off and confirmed off, then its holders go and recovery runs
    # (what FenceController does after a confirmed power-off).
    world.power_off("n2")
    Holders(store).release_node("n2")
    store.update_status(
        Node,
        "n2",
        lambda raw: NodeStatus.model_validate(raw).model_copy(
            update={"daemon_state": DaemonState.FENCED}
        ),
    )
    FenceController(store, "n1", cluster.scheduler.epoch, cluster.scheduler).recover("n2")
    wait_for(lambda: not cluster.exists("stranded"), 10, "the VM to go once n2 is fenced")
    assert store.read_placement("stranded") is None  # never recovered elsewhere
    assert not world.holders("stranded") and world.violations == []


def test_pvcctl_delete_waits_until_the_vm_is_gone(cluster: Cluster) -> None:
    cluster.run_vm("waited", "n1", "1s", ignore_acpi=True)
    started = time.monotonic()
    result = cluster.pvcctl("delete", "vm", "waited")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == 'virtualmachine "waited" deleted'
    assert time.monotonic() - started >= 0.9  # it waited out the 1s shutdownTimeout
    assert not cluster.exists("waited") and not cluster.world.holders("waited")

    cluster.run_vm("nowait", "n1", "60s", ignore_acpi=True)
    result = cluster.pvcctl("delete", "vm", "nowait", "--wait=false")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == 'virtualmachine "nowait" deleted'
    listed = cluster.pvcctl("get", "vm", "nowait")
    assert listed.returncode == 0 and "Terminating" in listed.stdout.splitlines()[1]
    assert cluster.api("DELETE", "/vms/nowait", params={"force": "true"}).status_code == 200
    assert not cluster.exists("nowait")


def test_pvcctl_delete_of_several_asks_for_all_before_it_waits(cluster: Cluster) -> None:
    """One slow guest must not keep the others from being deleted: every DELETE goes out
    first. Before, `delete vm slow quick` waited for slow alone, timed out, and never asked
    for quick."""
    cluster.run_vm("slow", "n1", "60s", ignore_acpi=True)
    cluster.run_vm("quick", "n1", "1s", ignore_acpi=True)
    result = cluster.pvcctl("delete", "vm", "slow", "quick", "--timeout", "3s")
    assert result.returncode == 1
    assert 'timed out: virtualmachine "slow" still Terminating' in result.stderr
    assert 'virtualmachine "quick" deleted' in result.stdout
    assert not cluster.exists("quick") and not cluster.world.holders("quick")
    assert cluster.exists("slow")
    assert cluster.api("DELETE", "/vms/slow", params={"force": "true"}).status_code == 200
    wait_for(lambda: not cluster.world.holders("slow"), 10, "slow destroyed")


def test_the_scheduler_puts_the_finalizer_back_on_a_vm_without_it(cluster: Cluster) -> None:
    store = cluster.store
    manifest = {"metadata": {"name": "old"}, "spec": {"memory": "64Mi"}}
    assert cluster.api("POST", "/vms", json=manifest).status_code == 201
    wait_for(lambda: cluster.up("n1", "old") or cluster.up("n2", "old"), 20, "old running")
    vm = store.get(VirtualMachine, "old")
    vm.metadata.finalizers = []  # as a VM created before finalizers existed
    store.update(vm)
    wait_for(
        lambda: store.get(VirtualMachine, "old").metadata.finalizers == [verbs.DOMAIN_FINALIZER],
        10,
        "the finalizer added again",
    )
    assert store.get(VirtualMachine, "old").metadata.generation == 1
