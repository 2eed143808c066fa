"""Which nodes reach a VM's volumes (zkstore/volumes.py): what the scheduler, drain, recovery
and the API's migrate check all rest on."""

from __future__ import annotations

from schemas import NodePool, NodeStatus, VirtualMachine, parse_resource
from zkstore.disks import CREATED, DELETING, DiskRecord
from zkstore.volumes import Binding, bound_to, unreached


def vm(*disks: dict[str, str]) -> VirtualMachine:
    obj = parse_resource(
        {
            "apiVersion": "pvc/v1",
            "kind": "VirtualMachine",
            "metadata": {"name": "web"},
            "spec": {"memory": "64Mi", "disks": list(disks)},
        }
    )
    assert isinstance(obj, VirtualMachine)
    return obj


def node(*pools: tuple[str, bool]) -> NodeStatus:
    return NodeStatus(
        storage=[
            NodePool(pool=p, type="shared", reachable=ok, message=None if ok else "folder gone")
            for p, ok in pools
        ]
    )


def record(
    disk: str, pool: str, pool_type: str, node_name: str, state: str = CREATED
) -> DiskRecord:
    return DiskRecord(
        "web",
        disk,
        node_name,
        f"{pool}/web_{disk}",
        None,
        state,
        pool=pool,
        pool_type=pool_type,
        volume=f"web_{disk}",
    )


def test_every_pool_a_disk_names_must_be_reachable() -> None:
    web = vm(
        {"name": "a", "pool": "fast", "size": "1Gi"}, {"name": "b", "pool": "slow", "volume": "x"}
    )
    assert unreached(web, [], "n1", node(("fast", True), ("slow", True))) == []
    assert unreached(web, [], "n1", node(("fast", True), ("slow", False))) == [
        "pool slow (folder gone)"
    ]
    assert unreached(web, [], "n1", node(("fast", True))) == [
        "pool slow (not reported by the node)"
    ]
    assert unreached(web, [], "n1", None) == [
        "pool fast (not reported by the node)",
        "pool slow (not reported by the node)",
    ]


def test_a_local_volume_is_reached_by_its_node_only() -> None:
    web = vm({"name": "a", "pool": "disk", "size": "1Gi"})
    local = record("a", "disk", "local", "n2")
    status = node(("disk", True))
    assert unreached(web, [local], "n2", status) == []
    assert unreached(web, [local], "n1", status) == [
        "disk a (volume web_a in local pool disk on n2)"
    ]
    assert bound_to(web, [local], {"disk"}) == Binding("a", "web_a", "disk", "n2")
    shared = record("a", "disk", "shared", "n2")
    assert unreached(web, [shared], "n1", status) == []
    assert bound_to(web, [shared], set()) is None
    assert bound_to(web, [record("a", "disk", "local", "n2", DELETING)], {"disk"}) is None


def test_an_existing_local_volume_binds_its_vm_to_the_node_it_is_pinned_to() -> None:
    web = vm({"name": "a", "pool": "disk", "volume": "kept.qcow2"})
    web.spec.placement.nodes = ["n2"]
    status = NodeStatus(storage=[NodePool(pool="disk", type="local", reachable=True)])
    assert unreached(web, [], "n2", status) == []
    assert unreached(web, [], "n1", status) == [
        "disk a (volume kept.qcow2 in local pool disk on n2)"
    ]
    assert bound_to(web, [], {"disk"}) == Binding("a", "kept.qcow2", "disk", "n2")
