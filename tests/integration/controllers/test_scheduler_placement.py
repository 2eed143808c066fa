"""The scheduler against a real ZooKeeper, with nodes made by hand (no daemons)."""

from __future__ import annotations

from typing import Any

import pytest

from controllers.scheduler import Scheduler
from schemas import (
    DaemonState,
    Node,
    NodeNetwork,
    NodeResources,
    NodeStatus,
    ObjectMeta,
    Placement,
    VirtualMachine,
    VirtualMachineStatus,
    VMPhase,
    parse_resource,
    set_condition,
)
from tests.helpers import apply_vm, node_of, wait_for
from zkstore import Store, paths
from zkstore.events import EventLog

GIB = 2**30


def add_node(
    store: Store,
    name: str,
    memory_gib: int = 8,
    load: float = 0.0,
    drain: bool = False,
    live: bool = True,
) -> None:
    node = Node(metadata=ObjectMeta(name=name))
    node.spec.drain = drain
    store.create(node)
    status = NodeStatus(
        daemon_state=DaemonState.RUN,
        resources=NodeResources(memory_total=memory_gib * GIB, load=load),
        conditions=set_condition([], "Ready", True, "HeartbeatOK"),
    )
    store.write_status(Node, name, status)
    if live:
        store.client.create(
            store.path(paths.node_lease(name)), b"{}", ephemeral=True, makepath=True
        )


def add_vm(store: Store, name: str, memory: str = "1Gi", **spec: Any) -> None:
    apply_vm(store, name, memory, **spec)


def test_mem_policy_picks_the_node_with_most_free_memory(
    store: Store, scheduler: Scheduler
) -> None:
    add_node(store, "n1", memory_gib=4)
    add_node(store, "n2", memory_gib=16)
    add_node(store, "n3", memory_gib=8)
    add_vm(store, "a", memory="2Gi")
    assert wait_for(lambda: node_of(store, "a"), 10, "a placed") == "n2"


@pytest.mark.parametrize(
    ("policy", "expected"),
    [("vms", "n2"), ("vcpus", "n2"), ("load", "n3"), ("memprov", "n2"), ("mem", "n1")],
)
def test_each_policy_chooses_by_its_measure(
    store: Store, scheduler: Scheduler, policy: str, expected: str
) -> None:
    add_node(store, "n1", memory_gib=64, load=3.0)
    add_node(store, "n2", memory_gib=32, load=2.0)
    add_node(store, "n3", memory_gib=32, load=0.5)
    # n1: two VMs; n3: one VM with 4 vCPUs.
    for vm, node in (("x1", "n1"), ("x2", "n1"), ("x3", "n3")):
        add_vm(store, vm, memory="1Gi", vcpus=4 if vm == "x3" else 1, placement={"nodes": [node]})
        wait_for(lambda vm=vm: node_of(store, vm), 10, f"{vm} placed")
    # A halted VM counts as provisioned on n1 but not allocated: memprov avoids n1, mem not.
    add_vm(store, "halted", memory="40Gi", runStrategy="Halted")
    store.write_placement("halted", Placement(node="n1"), epoch=None)
    add_vm(store, "new", memory="1Gi", placement={"policy": policy})
    assert wait_for(lambda: node_of(store, "new"), 10, "new placed") == expected


def test_node_limit_and_home_are_honoured(store: Store, scheduler: Scheduler) -> None:
    add_node(store, "n1", memory_gib=64)
    add_node(store, "n2", memory_gib=8)
    add_node(store, "n3", memory_gib=8)
    add_vm(store, "limited", placement={"nodes": ["n2", "n3"]})
    assert wait_for(lambda: node_of(store, "limited"), 10, "placed") in ("n2", "n3")
    add_vm(store, "homed", placement={"home": "n3"})
    assert wait_for(lambda: node_of(store, "homed"), 10, "placed") == "n3"


def test_home_without_room_falls_back_to_the_policy(store: Store, scheduler: Scheduler) -> None:
    add_node(store, "n1", memory_gib=2)
    add_node(store, "n2", memory_gib=8)
    add_vm(store, "big", memory="4Gi", placement={"home": "n1"})
    assert wait_for(lambda: node_of(store, "big"), 10, "placed") == "n2"


def test_drained_dead_and_full_nodes_are_never_chosen(store: Store, scheduler: Scheduler) -> None:
    add_node(store, "drained", memory_gib=64, drain=True)
    add_node(store, "dead", memory_gib=64, live=False)
    add_node(store, "small", memory_gib=1)
    add_node(store, "ok", memory_gib=4)
    for i in range(3):
        add_vm(store, f"v{i}", memory="1Gi")
    for i in range(3):
        assert wait_for(lambda i=i: node_of(store, f"v{i}"), 10, "placed") == "ok"
    # "ok" has 1 GiB left: a 2 GiB VM does not fit anywhere.
    add_vm(store, "nofit", memory="2Gi")

    def unschedulable() -> str | None:
        vm = store.get(VirtualMachine, "nofit")
        cond = next(
            (c for c in (vm.status.conditions if vm.status else []) if c.type == "Scheduled"), None
        )
        return cond.message if cond and cond.reason == "Unschedulable" else None

    message = wait_for(unschedulable, 10, "an Unschedulable condition")
    assert "drained: not ready" in message and "dead: not ready" in message
    assert "ok: 1024 MiB free, needs 2048 MiB" in message
    assert node_of(store, "nofit") is None


def test_a_node_change_counts_at_the_next_decision(store: Store, scheduler: Scheduler) -> None:
    """The Ready nodes are kept between decisions and worked out again on a node or lease
    event: a node whose lease goes, or that is drained, is not chosen after it."""
    add_node(store, "big", memory_gib=64)
    add_node(store, "mid", memory_gib=16)
    add_node(store, "small", memory_gib=8)
    add_vm(store, "first")
    assert wait_for(lambda: node_of(store, "first"), 10, "placed") == "big"
    store.client.delete(store.path(paths.node_lease("big")))
    wait_for(lambda: "big" not in scheduler.ready_nodes(), 10, "the lease's loss seen")
    add_vm(store, "second")
    assert wait_for(lambda: node_of(store, "second"), 10, "placed") == "mid"

    def drain(node: Node) -> None:
        node.spec.drain = True

    store.mutate_spec(Node, "mid", drain)
    wait_for(lambda: "mid" not in scheduler.ready_nodes(), 10, "the drain seen")
    add_vm(store, "third")
    assert wait_for(lambda: node_of(store, "third"), 10, "placed") == "small"
    assert set(scheduler.ready_nodes()) == {"small"}


def test_a_pending_vm_is_placed_when_a_node_fits(store: Store, scheduler: Scheduler) -> None:
    add_node(store, "n1", memory_gib=1)
    add_vm(store, "waiting", memory="4Gi")
    wait_for(lambda: store.get(VirtualMachine, "waiting").status, 10, "a Pending status")
    assert node_of(store, "waiting") is None
    add_node(store, "n2", memory_gib=8)
    assert wait_for(lambda: node_of(store, "waiting"), 10, "placed on the new node") == "n2"


def test_halted_vms_are_not_placed(store: Store, scheduler: Scheduler) -> None:
    add_node(store, "n1")
    add_vm(store, "off", runStrategy="Halted")
    status = wait_for(lambda: store.get(VirtualMachine, "off").status, 10, "a status")
    assert status.phase.value == "Stopped"
    assert node_of(store, "off") is None


def test_a_deposed_primary_cannot_place(store: Store, scheduler: Scheduler) -> None:
    store.bump_epoch("someone-else")
    add_node(store, "n1")
    add_vm(store, "late")
    with pytest.raises(pytest.fail.Exception):
        wait_for(lambda: node_of(store, "late"), 2, "placement (must not happen)")


def test_a_vm_goes_only_where_its_networks_are_ready(store: Store, scheduler: Scheduler) -> None:
    store.apply(
        parse_resource(
            {
                "apiVersion": "pvc/v1",
                "kind": "Network",
                "metadata": {"name": "lan"},
                "spec": {"type": "managed", "vni": 100},
            }
        )
    )
    add_node(store, "n1", memory_gib=64)  # most memory, but lan is not ready there
    add_node(store, "n2", memory_gib=8)
    add_node(store, "n3", memory_gib=16)  # lan not built there yet

    def networks(node: str, ready: bool, message: str = "") -> None:
        status = NodeStatus.model_validate(store.read_status(Node, node))
        status.networks = [NodeNetwork(name="lan", bridge="vmbr100", ready=ready, message=message)]
        store.write_status(Node, node, status)

    networks("n1", False, "no cluster address: set network.cluster in pvcnoded's config")
    networks("n2", True)
    add_vm(store, "a", nics=[{"network": "lan"}])
    assert wait_for(lambda: node_of(store, "a"), 10, "a placed") == "n2"
    told = wait_for(
        lambda: [e for e in EventLog(store).list(kind="VirtualMachine", name="a")
                 if e.reason == "Scheduled"],
        10,
        "a Scheduled event",
    )  # fmt: skip
    assert told[0].message.startswith("placed on n2") and told[0].source == "n2"
    # Ready nowhere: Pending, and the reason names each node's problem.
    networks("n2", False, "bridge failed")
    add_vm(store, "b", nics=[{"network": "lan"}])
    status = wait_for(
        lambda: (s := store.read_status(VirtualMachine, "b")) and s.get("reason") and s, 10, "b"
    )
    assert status["phase"] == "Pending" and status["reason"] == "Unschedulable"
    message = next(c["message"] for c in status["conditions"] if c["type"] == "Scheduled")
    assert "n1: network lan not ready (no cluster address" in message
    assert "n2: network lan not ready (bridge failed)" in message
    assert "n3: network lan not built yet" in message
    # A network that does not exist: Pending with that reason.
    add_vm(store, "c", nics=[{"network": "wan"}])
    status = wait_for(
        lambda: (s := store.read_status(VirtualMachine, "c")) and s.get("reason") and s, 10, "c"
    )
    assert (status["phase"], status["reason"]) == ("Pending", "NetworkNotFound")


def test_a_placed_vms_new_memory_counts_at_the_next_decision(
    store: Store, scheduler: Scheduler
) -> None:
    """The scheduler keeps what each placed VM takes per spec version, so its status writes
    cost no parse; a change of the spec itself must still count."""
    add_node(store, "n1", memory_gib=8)
    add_node(store, "n2", memory_gib=4)
    add_vm(store, "big", memory="1Gi", placement={"nodes": ["n1"]})
    wait_for(lambda: node_of(store, "big"), 10, "big placed")
    for phase in (VMPhase.STARTING, VMPhase.RUNNING):  # the node's status writes
        store.write_status(VirtualMachine, "big", VirtualMachineStatus(phase=phase, node="n1"))
    add_vm(store, "before", memory="1Gi")
    assert wait_for(lambda: node_of(store, "before"), 10, "before placed") == "n1"
    add_vm(store, "big", memory="6Gi", placement={"nodes": ["n1"]})
    store.write_status(
        VirtualMachine, "big", VirtualMachineStatus(phase=VMPhase.RUNNING, node="n1")
    )
    add_vm(store, "after", memory="1Gi")
    # n1: 8 GiB - 7 GiB booked = 1 GiB free; n2: 4 GiB free.
    assert wait_for(lambda: node_of(store, "after"), 10, "after placed") == "n2"


def test_a_booking_counts_until_the_cache_shows_its_write(
    store: Store, scheduler: Scheduler
) -> None:
    """Recovery books its targets one after another (Scheduler.book) and writes them while
    the cache still shows the dead node: each booking must count at the next choice, or a
    burst of recovered VMs all land on the node with the most free memory."""
    for name in ("a", "b"):  # no node yet: nothing places them before the test does
        add_vm(store, name, memory="4Gi")
        store.write_placement(name, Placement(node="dead"), epoch=None)
        wait_for(
            lambda n=name: (scheduler.vms.placement_raw(n) or {}).get("node") == "dead",
            10,
            f"{name} seen on the dead node",
        )
    add_node(store, "n1", memory_gib=8)
    add_node(store, "n2", memory_gib=6)
    wait_for(lambda: len(scheduler.ready_nodes()) == 2, 10, "both nodes seen")
    vms = {name: scheduler.vms.get(name) for name in ("a", "b")}
    first, _ = scheduler.book("a", vms["a"], exclude=frozenset({"dead"}))  # type: ignore[arg-type]
    second, _ = scheduler.book("b", vms["b"], exclude=frozenset({"dead"}))  # type: ignore[arg-type]
    # n1: 8 GiB free, then 4 once a is booked there; n2: 6 GiB.
    assert (first, second) == ("n1", "n2")
