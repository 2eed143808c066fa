"""Flush and unflush with real processes: a drained node's VMs move away a few at a time and
come back when it is ready again; a VM that may run nowhere else holds the flush."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.ha_invariants import Invariants
from tests.helpers import wait_for
from tests.localcluster_fixture import RunningCluster, start_cluster


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[RunningCluster]:
    yield from start_cluster(tmp_path / "drain", nodes=3)


def vm(name: str, **placement: Any) -> dict[str, Any]:
    return {
        "apiVersion": "pvc/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": name},
        "spec": {"memory": "128Mi", "placement": placement},
    }


def where(cluster: RunningCluster) -> dict[str, tuple[str | None, str | None]]:
    return {
        v["metadata"]["name"]: (
            (v.get("status") or {}).get("node"),
            (v.get("status") or {}).get("phase"),
        )
        for v in cluster.items("vms")
    }


def node_status(cluster: RunningCluster, name: str) -> dict[str, Any]:
    return dict(cluster.api("GET", f"/api/v1/nodes/{name}").json().get("status") or {})


def events_of(cluster: RunningCluster, name: str) -> list[dict[str, Any]]:
    response = cluster.api("GET", "/api/v1/events", params={"kind": "vm", "name": name})
    return list(response.json()["items"])


def drained(status: dict[str, Any]) -> dict[str, Any]:
    return next((c for c in status.get("conditions", []) if c["type"] == "Drained"), {})


def all_running(cluster: RunningCluster, names: list[str]) -> dict[str, str] | None:
    seen = where(cluster)
    if all(seen.get(n, (None, None))[1] == "Running" for n in names):
        return {n: str(seen[n][0]) for n in names}
    return None


def test_flush_moves_every_vm_away_and_ready_brings_them_back(cluster: RunningCluster) -> None:
    names = ["fa", "fb", "fc"]
    cluster.apply(*(vm(n, home="node1") for n in names), vm("other", home="node2"))
    wait_for(lambda: all_running(cluster, [*names, "other"]), 30, "all VMs Running")
    with Invariants(cluster):
        flushed = cluster.pvcctl("node", "flush", "node1", "--wait", "--timeout", "90s")
        assert flushed.returncode == 0, flushed.stdout + flushed.stderr
        status = node_status(cluster, "node1")
        assert status["domainState"] == "flushed"
        assert drained(status)["status"] == "True"
        assert status["domains"] == []
        placed = wait_for(lambda: all_running(cluster, names), 30, "flushed VMs Running")
        assert "node1" not in placed.values(), placed
        # The node takes nothing new while drained.
        cluster.apply(vm("late"))
        late = wait_for(lambda: all_running(cluster, ["late"]), 30, "late Running")
        assert late["late"] != "node1"
        vms = {v["metadata"]["name"]: v for v in cluster.items("vms")}
        assert all(vms[n]["spec"]["placement"].get("home") == "node1" for n in names), (
            "a flush never edits spec (GitOps sees no drift)"
        )

        ready = cluster.pvcctl("node", "ready", "node1", "--wait", "--timeout", "90s")
        assert ready.returncode == 0, ready.stdout + ready.stderr
        back = wait_for(lambda: all_running(cluster, names), 30, "VMs back and Running")
        assert back == dict.fromkeys(names, "node1")
        assert where(cluster)["other"][0] == "node2"
        assert drained(node_status(cluster, "node1"))["status"] == "False"
    node_events = cluster.api("GET", "/api/v1/events", params={"kind": "node", "name": "node1"})
    node_reasons = [e["reason"] for e in node_events.json()["items"]]
    assert node_reasons.count("Flushed") == 1 and node_reasons.count("Ready") == 1, node_reasons
    reasons = [e["reason"] for e in events_of(cluster, "fa")]
    assert "Flushing" in reasons and "Unflushing" in reasons, reasons


def test_a_vm_pinned_to_the_node_holds_the_flush_and_keeps_running(
    cluster: RunningCluster,
) -> None:
    cluster.apply(vm("pinned", nodes=["node1"]), vm("zfree", home="node1"))
    wait_for(lambda: all_running(cluster, ["pinned", "zfree"]), 30, "VMs Running")
    result = cluster.pvcctl("node", "flush", "node1", "--wait", "--timeout", "8s")
    assert result.returncode != 0
    assert "flushing" in result.stderr
    status = node_status(cluster, "node1")
    assert status["domainState"] == "flushing"
    assert where(cluster)["pinned"] == ("node1", "Running")
    assert where(cluster)["zfree"][0] != "node1"
    events = events_of(cluster, "pinned")
    assert any(e["reason"] == "FlushBlocked" and "node1" in e["message"] for e in events), events

    ready = cluster.pvcctl("node", "ready", "node1", "--wait", "--timeout", "60s")
    assert ready.returncode == 0, ready.stdout + ready.stderr
    wait_for(lambda: where(cluster)["zfree"] == ("node1", "Running"), 30, "zfree back on node1")


def test_a_vm_migrated_by_hand_returns_to_the_node_it_was_flushed_from(
    cluster: RunningCluster,
) -> None:
    cluster.apply(vm("mm", home="node1"))
    wait_for(lambda: all_running(cluster, ["mm"]) == {"mm": "node1"}, 30, "mm on node1")
    moved = cluster.pvcctl("vm", "migrate", "mm", "--to", "node2")
    assert moved.returncode == 0, moved.stderr
    wait_for(lambda: all_running(cluster, ["mm"]) == {"mm": "node2"}, 30, "mm on node2")
    flushed = cluster.pvcctl("node", "flush", "node2", "--wait", "--timeout", "60s")
    assert flushed.returncode == 0, flushed.stdout + flushed.stderr
    assert all_running(cluster, ["mm"]) != {"mm": "node2"}
    # Only the flushed node is in a flush; the node the VM was migrated from is not.
    assert node_status(cluster, "node1")["domainState"] == "ready"
    ready = cluster.pvcctl("node", "ready", "node2", "--wait", "--timeout", "60s")
    assert ready.returncode == 0, ready.stdout + ready.stderr
    wait_for(lambda: all_running(cluster, ["mm"]) == {"mm": "node2"}, 30, "mm back on node2")
