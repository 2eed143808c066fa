"""The four kinds: defaults, validation rules users hit, secrets, conditions."""

from __future__ import annotations

from typing import Any

import pytest

from schemas import (
    Cluster,
    Condition,
    ConditionStatus,
    InvalidResource,
    Network,
    Node,
    RunStrategy,
    VirtualMachine,
    condition_is_true,
    get_condition,
    kind_for,
    parse_resource,
    set_condition,
)

SECRET = "s3cret-pa55"


def doc(kind: str, name: str, spec: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"apiVersion": "pvc/v1", "kind": kind, "metadata": {"name": name}}
    if spec is not None:
        data["spec"] = spec
    data.update(extra)
    return data


def vm(name: str = "web", **spec: Any) -> dict[str, Any]:
    return doc("VirtualMachine", name, {"memory": "1Gi", **spec})


def fields_of(data: dict[str, Any]) -> list[str]:
    with pytest.raises(InvalidResource) as info:
        parse_resource(data)
    return [e.field for e in info.value.errors]


def message_of(data: dict[str, Any]) -> str:
    with pytest.raises(InvalidResource) as info:
        parse_resource(data)
    return str(info.value)


# -- VirtualMachine ---------------------------------------------------------------------


def test_vm_defaults_match_the_design() -> None:
    obj = parse_resource(vm())
    assert isinstance(obj, VirtualMachine)
    assert obj.spec.run_strategy is RunStrategy.ALWAYS
    assert obj.spec.shutdown_timeout == "180s"
    assert obj.spec.vcpus == 1
    assert obj.spec.autostart is False
    wire = obj.wire()
    assert wire["apiVersion"] == "pvc/v1"
    assert wire["spec"]["runStrategy"] == "Always"
    assert wire["spec"]["shutdownTimeout"] == "180s"
    # auto, as PVC has always moved VMs: live, falling back to a shutdown move where live
    # migration fails (a VM whose owner wants no shutdown ever says method: live).
    assert wire["spec"]["migration"] == {"method": "auto", "maxDowntime": "300ms"}
    assert "status" not in wire


@pytest.mark.parametrize("strategy", ["Always", "RerunOnFailure", "Halted"])
def test_vm_accepts_each_run_strategy(strategy: str) -> None:
    assert parse_resource(vm(runStrategy=strategy)).spec.run_strategy == strategy


def test_vm_rejects_an_unknown_run_strategy() -> None:
    assert fields_of(vm(runStrategy="Sometimes")) == ["spec.runStrategy"]


@pytest.mark.parametrize(
    ("data", "field"),
    [
        (vm(cpus=2), "spec.cpus"),
        ({**vm(), "extra": 1}, "extra"),
        (
            {**vm(), "metadata": {"name": "web", "labelz": {"a": "b"}}},
            "metadata.labelz",
        ),
        (vm(disks=[{"name": "root", "size": "10Gi", "bus": "ide"}]), "spec.disks[0].bus"),
        (vm(placement={"home": "n1", "prefer": "n2"}), "spec.placement.prefer"),
    ],
)
def test_unknown_fields_are_rejected_with_their_path(data: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidResource) as info:
        parse_resource(data)
    assert [(e.field, e.message) for e in info.value.errors] == [(field, "unknown field")]


@pytest.mark.parametrize("name", ["web", "web-1", "a", "0", "a" * 63, "1-2-3"])
def test_dns_label_names_are_accepted(name: str) -> None:
    assert parse_resource(vm(name)).name == name


@pytest.mark.parametrize(
    "name", ["Web", "-web", "web-", "web_1", "web.example", "a" * 64, "", "wéb", " web"]
)
def test_names_that_are_not_dns_labels_are_rejected(name: str) -> None:
    assert fields_of(vm(name)) == ["metadata.name"]


def test_a_name_with_a_trailing_newline_is_rejected() -> None:
    assert fields_of(vm("web\n")) == ["metadata.name"]


def test_placement_home_must_be_among_the_allowed_nodes() -> None:
    data = vm(placement={"home": "n3", "nodes": ["n1", "n2"]})
    assert fields_of(data) == ["spec.placement"]
    assert "home node 'n3' is not among the allowed nodes" in message_of(data)


def test_placement_home_inside_the_node_limit_or_without_one_is_fine() -> None:
    inside = parse_resource(vm(placement={"home": "n2", "nodes": ["n1", "n2"]}))
    assert inside.spec.placement.home == "n2"
    unlimited = parse_resource(vm(placement={"home": "n3"}))
    assert unlimited.spec.placement.nodes == []


def test_placement_node_names_must_be_dns_labels() -> None:
    assert fields_of(vm(placement={"nodes": ["n1", "Bad_Node"]})) == ["spec.placement.nodes[1]"]


@pytest.mark.parametrize(
    ("disk", "says"),
    [
        ({"name": "root"}, "a disk needs 'pool' with 'size', 'volume' or 'from'"),
        (
            {"name": "root", "size": "10Gi", "source": "/var/lib/pvc/root.qcow2"},
            "'source' is an image path: no 'pool', 'volume', 'from' or 'size'",
        ),
        ({"name": "root", "volume": "x"}, "'volume' and 'from' name volumes of a pool"),
        ({"name": "root", "pool": "p"}, "a disk in a pool needs 'size'"),
        ({"name": "root", "pool": "p", "volume": "v", "size": "1Gi"}, "no 'size' or 'from'"),
        ({"name": "root", "pool": "p", "volume": "a/b"}, "invalid volume name 'a/b'"),
        ({"name": "root", "pool": "p", "from": "../x"}, "invalid volume name '../x'"),
    ],
)
def test_a_disk_takes_one_form(disk: dict[str, str], says: str) -> None:
    data = vm(disks=[{"name": "ok", "size": "1Gi"}, disk])
    assert fields_of(data)[0].startswith("spec.disks[1]")
    assert says in message_of(data)


@pytest.mark.parametrize(
    "disk",
    [
        {"name": "a", "pool": "p", "size": "1Gi"},
        {"name": "a", "pool": "p", "volume": "debian-12.qcow2"},
        {"name": "a", "pool": "p", "from": "debian-12", "size": "20Gi"},
        {"name": "a", "pool": "p", "from": "debian-12"},
    ],
)
def test_disks_in_pools_are_accepted(disk: dict[str, str]) -> None:
    obj = parse_resource(vm(disks=[disk]))
    assert isinstance(obj, VirtualMachine)
    assert obj.wire()["spec"]["disks"][0] == disk


def test_disk_with_size_or_absolute_source_is_accepted() -> None:
    obj = parse_resource(
        vm(
            disks=[
                {"name": "root", "size": "10Gi"},
                {"name": "data", "source": "/srv/data.raw", "format": "raw"},
            ]
        )
    )
    assert [(d.name, d.size, d.source) for d in obj.spec.disks] == [
        ("root", "10Gi", None),
        ("data", None, "/srv/data.raw"),
    ]


def test_disk_source_must_be_an_absolute_path() -> None:
    assert "must be an absolute path" in message_of(vm(disks=[{"name": "d", "source": "d.img"}]))


def test_disk_names_must_be_unique() -> None:
    data = vm(disks=[{"name": "d", "size": "1Gi"}, {"name": "d", "size": "2Gi"}])
    assert "repeated: d" in message_of(data)


def test_nic_mac_is_normalised_to_lower_case() -> None:
    obj = parse_resource(vm(nics=[{"network": "lan", "mac": "52:54:00:AB:CD:EF"}]))
    assert obj.spec.nics[0].mac == "52:54:00:ab:cd:ef"


def test_nic_without_mac_is_accepted_for_derivation() -> None:
    obj = parse_resource(vm(nics=[{"network": "lan"}]))
    assert obj.spec.nics[0].mac is None
    assert obj.spec.nics[0].model == "virtio"


@pytest.mark.parametrize(
    "mac", ["52:54:00:12:34", "52-54-00-12-34-56", "52:54:00:12:34:5g", "525400123456", ""]
)
def test_nic_rejects_malformed_macs(mac: str) -> None:
    data = vm(nics=[{"network": "lan"}, {"network": "lan", "mac": mac}])
    assert fields_of(data) == ["spec.nics[1].mac"]
    assert "invalid MAC address" in message_of(data)


def test_nic_rejects_a_mac_with_a_trailing_newline() -> None:
    assert fields_of(vm(nics=[{"network": "lan", "mac": "52:54:00:12:34:56\n"}])) == [
        "spec.nics[0].mac"
    ]


# -- Network ----------------------------------------------------------------------------


def net(**spec: Any) -> dict[str, Any]:
    return doc("Network", "lan", spec)


def test_managed_network_with_addressing_is_accepted() -> None:
    obj = parse_resource(
        net(
            type="managed",
            vni=100,
            mtu=1450,
            domain="lan.example",
            ipv4={
                "network": "10.1.0.0/24",
                "gateway": "10.1.0.1",
                "dhcp": {"start": "10.1.0.100", "end": "10.1.0.200"},
            },
            reservations=[{"mac": "52:54:00:00:00:01", "ip": "10.1.0.10", "hostname": "db"}],
        )
    )
    assert isinstance(obj, Network)
    assert obj.spec.vni == 100
    assert obj.spec.ipv4 is not None and obj.spec.ipv4.gateway == "10.1.0.1"


def test_managed_network_needs_a_vni() -> None:
    assert "a managed network needs 'vni'" in message_of(net(type="managed"))


def test_managed_network_takes_no_vlan() -> None:
    assert "'vlan' is for bridged networks" in message_of(net(type="managed", vni=5, vlan=10))


@pytest.mark.parametrize(
    ("ipv4", "problem"),
    [
        ({"network": "10.1.0.0/24", "gateway": "10.2.0.1"}, "gateway 10.2.0.1 is outside"),
        ({"network": "10.1.0.0/24", "gateway": "gw"}, "gateway 'gw' is not an IPv4 address"),
        ({"network": "10.1.0.1/24", "gateway": "10.1.0.1"}, "invalid ipv4 network"),
        (
            {
                "network": "10.1.0.0/24",
                "gateway": "10.1.0.1",
                "dhcp": {"start": "10.1.0.10", "end": "10.1.1.10"},
            },
            "dhcp.end 10.1.1.10 is outside",
        ),
        (
            {
                "network": "10.1.0.0/24",
                "gateway": "10.1.0.1",
                "dhcp": {"start": "10.1.0.200", "end": "10.1.0.100"},
            },
            "dhcp.start must not be above dhcp.end",
        ),
    ],
)
def test_managed_network_addresses_must_lie_inside_the_network(
    ipv4: dict[str, Any], problem: str
) -> None:
    data = net(type="managed", vni=7, ipv4=ipv4)
    assert fields_of(data) == ["spec.ipv4"]
    assert problem in message_of(data)


def test_bridged_network_with_a_vlan_is_accepted() -> None:
    obj = parse_resource(net(type="bridged", vlan=200, mtu=9000))
    assert obj.spec.type == "bridged"
    assert obj.spec.vlan == 200


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        ({"ipv4": {"network": "10.1.0.0/24", "gateway": "10.1.0.1"}}, "ipv4"),
        ({"vni": 9}, "vni"),
        ({"domain": "x.example"}, "domain"),
        ({"reservations": [{"mac": "52:54:00:00:00:01", "ip": "10.0.0.2"}]}, "reservations"),
    ],
)
def test_bridged_network_takes_no_managed_settings(extra: dict[str, Any], named: str) -> None:
    message = message_of(net(type="bridged", vlan=200, **extra))
    assert f"a bridged network takes no {named}" in message


@pytest.mark.parametrize("vlan", [0, 4095])
def test_vlan_must_be_in_range(vlan: int) -> None:
    assert fields_of(net(type="bridged", vlan=vlan)) == ["spec.vlan"]


def test_network_type_is_required_and_closed() -> None:
    assert fields_of(net()) == ["spec.type"]
    assert fields_of(net(type="routed")) == ["spec.type"]


def test_reservation_with_a_bad_mac_names_the_reservation_field() -> None:
    data = net(type="managed", vni=3, reservations=[{"mac": "zz", "ip": "10.0.0.3"}])
    assert fields_of(data) == ["spec.reservations[0].mac"]


# -- Cluster ----------------------------------------------------------------------------


def test_cluster_defaults() -> None:
    obj = parse_resource(doc("Cluster", "cluster"))
    assert isinstance(obj, Cluster)
    fencing = obj.spec.fencing
    assert (fencing.keepalive_interval, fencing.fence_intervals, fencing.saving_throws) == (
        "5s",
        6,
        6,
    )
    assert fencing.dead_after() == 30.0
    assert fencing.fence_after() == 60.0
    assert obj.spec.maintenance is False


def test_failed_fence_migrate_is_refused() -> None:
    data = doc("Cluster", "cluster", {"fencing": {"failedFence": "migrate"}})
    assert fields_of(data) == ["spec.fencing"]
    assert "two copies" in message_of(data)
    ok = doc("Cluster", "cluster", {"fencing": {"failedFence": "none"}})
    assert parse_resource(ok).spec.fencing.failed_fence == "none"


def test_cluster_must_be_named_cluster() -> None:
    assert "must be named 'cluster'" in message_of(doc("Cluster", "prod"))


@pytest.mark.parametrize(
    ("fencing", "ok"),
    [
        # keepaliveInterval 5s x (min(fenceIntervals 6, 2) + savingThrows 6) = 40s
        ({"selfFenceAfter": "39s"}, True),
        ({"selfFenceAfter": "40s"}, False),
        ({"selfFenceAfter": "59s"}, False),
        ({"selfFenceAfter": "1m"}, False),
        (
            {
                "keepaliveInterval": "1s",
                "fenceIntervals": 2,
                "savingThrows": 1,
                "selfFenceAfter": "2999ms",
            },
            True,
        ),
        (
            {
                "keepaliveInterval": "1s",
                "fenceIntervals": 2,
                "savingThrows": 1,
                "selfFenceAfter": "3s",
            },
            False,
        ),
    ],
)
def test_self_fence_must_happen_before_others_recover(fencing: dict[str, Any], ok: bool) -> None:
    data = doc("Cluster", "cluster", {"fencing": fencing})
    if ok:
        assert parse_resource(data).spec.fencing.self_fence_after == fencing["selfFenceAfter"]
    else:
        assert fields_of(data) == ["spec.fencing"]
        assert "selfFenceAfter" in message_of(data)


def test_keepalive_interval_must_be_positive() -> None:
    data = doc("Cluster", "cluster", {"fencing": {"keepaliveInterval": "0s"}})
    assert fields_of(data) == ["spec.fencing.keepaliveInterval"]


# -- Node -------------------------------------------------------------------------------


def fenced_node() -> Node:
    obj = parse_resource(
        doc(
            "Node",
            "hv1",
            {
                "fence": {
                    "agent": "ipmi",
                    "address": "10.0.0.9",
                    "user": "admin",
                    "password": SECRET,
                }
            },
        )
    )
    assert isinstance(obj, Node)
    return obj


def test_node_fence_password_is_masked_in_wire_output() -> None:
    wire = fenced_node().wire()
    assert wire["spec"]["fence"]["password"] == "********"
    assert SECRET not in repr(wire)
    assert SECRET not in repr(fenced_node())


def test_node_fence_password_is_kept_in_the_stored_form() -> None:
    stored = fenced_node().stored()
    assert stored["spec"]["fence"]["password"] == SECRET
    assert parse_resource(stored).spec.fence.password.get_secret_value() == SECRET


def test_ipmi_fence_agent_needs_an_address() -> None:
    assert "needs 'address'" in message_of(doc("Node", "hv1", {"fence": {"agent": "ipmi"}}))


def test_exec_fence_agent_needs_a_command() -> None:
    assert "needs 'command'" in message_of(doc("Node", "hv1", {"fence": {"agent": "exec"}}))


# -- envelope and registry --------------------------------------------------------------


def test_wrong_api_version_is_rejected() -> None:
    assert fields_of({**vm(), "apiVersion": "v1"}) == ["apiVersion"]


def test_missing_kind_and_unknown_kind_name_the_kind_field() -> None:
    data = vm()
    del data["kind"]
    assert fields_of(data) == ["kind"]
    assert fields_of({**vm(), "kind": "Pod"}) == ["kind"]


@pytest.mark.parametrize(
    ("word", "cls"),
    [
        ("vm", VirtualMachine),
        ("VMS", VirtualMachine),
        ("VirtualMachine", VirtualMachine),
        ("net", Network),
        ("no", Node),
        ("nodes", Node),
        ("cluster", Cluster),
    ],
)
def test_kind_for_resolves_what_users_type(word: str, cls: type) -> None:
    assert kind_for(word) is cls


def test_kind_for_unknown_lists_the_known_kinds() -> None:
    with pytest.raises(KeyError, match=r"vms \(VirtualMachine\)"):
        kind_for("pods")


# -- conditions -------------------------------------------------------------------------

OLD = "2000-01-01T00:00:00.000000Z"


def test_set_condition_adds_a_new_condition() -> None:
    conds = set_condition([], "Ready", True, "Running", "up")
    assert [(c.type, c.status, c.reason, c.message) for c in conds] == [
        ("Ready", ConditionStatus.TRUE, "Running", "up")
    ]
    assert condition_is_true(conds, "Ready")
    assert not condition_is_true(conds, "Scheduled")


def test_set_condition_keeps_transition_time_when_status_is_unchanged() -> None:
    start = [Condition(type="Ready", status="True", reason="Running", last_transition_time=OLD)]
    conds = set_condition(start, "Ready", ConditionStatus.TRUE, "StillRunning", "fine")
    ready = get_condition(conds, "Ready")
    assert ready is not None
    assert ready.last_transition_time == OLD
    assert (ready.reason, ready.message) == ("StillRunning", "fine")


def test_set_condition_moves_transition_time_when_status_changes() -> None:
    start = [
        Condition(type="Scheduled", status="True", reason="Placed", last_transition_time=OLD),
        Condition(type="Ready", status="True", reason="Running", last_transition_time=OLD),
    ]
    conds = set_condition(start, "Ready", False, "Crashed")
    ready = get_condition(conds, "Ready")
    assert ready is not None
    assert ready.status == ConditionStatus.FALSE
    assert ready.last_transition_time > OLD
    # The other condition is left exactly as it was, in its place.
    assert [c.type for c in conds] == ["Scheduled", "Ready"]
    assert conds[0] == start[0]


@pytest.mark.parametrize("key", ["bad key!", "-x", "a/", "x" * 64, "bad_prefix!/name"])
def test_a_label_or_annotation_key_kubernetes_would_refuse_is_invalid(key: str) -> None:
    for field in ("labels", "annotations"):
        data = net(type="managed", vni=5)
        data["metadata"][field] = {key: "v"}
        assert fields_of(data) == [f"metadata.{field}"]
        assert "invalid key" in message_of(data)


def test_label_keys_with_a_prefix_and_any_value_are_valid() -> None:
    data = net(type="managed", vni=5)
    data["metadata"]["labels"] = {"pvc.io/tier": "[prod]", "app": "", "a.b_c-d": "x y"}
    assert parse_resource(data).metadata.labels["pvc.io/tier"] == "[prod]"
