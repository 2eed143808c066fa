"""HA with real processes: node death, saving throws, fencing through the local power agent,
recovery, maintenance mode, failed fences. Invariants are checked all along."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from localcluster.process import pid_alive, signal_ours
from tests.ha_invariants import Invariants
from tests.ha_manifests import cluster_object
from tests.helpers import holds_for, metric_value, wait_for
from tests.localcluster_fixture import RunningCluster, start_cluster

VMS = [f"ha{i}" for i in range(6)]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[RunningCluster]:
    yield from start_cluster(tmp_path / "ha", nodes=3)


def apply(cluster: RunningCluster, *objects: dict[str, Any]) -> None:
    response = cluster.api("POST", "/api/v1/apply", json=list(objects))
    assert response.status_code == 200, response.text


def vm(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "pvc/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": name},
        "spec": {"memory": "128Mi"},
    }


def vms(cluster: RunningCluster) -> dict[str, dict[str, Any]]:
    return {v["metadata"]["name"]: v for v in cluster.items("vms")}


def node_status(cluster: RunningCluster, name: str) -> dict[str, Any]:
    return dict(cluster.api("GET", f"/api/v1/nodes/{name}").json().get("status") or {})


def condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions", []) if c["type"] == type_), {})


def running_everywhere(cluster: RunningCluster) -> bool:
    return all((v.get("status") or {}).get("phase") == "Running" for v in vms(cluster).values())


def setup_vms(cluster: RunningCluster, **cluster_spec: Any) -> tuple[str, list[str]]:
    """Apply the fast profile and six VMs; return a non-primary node and the VMs on it."""
    apply(cluster, cluster_object(**cluster_spec), *[vm(n) for n in VMS])
    wait_for(lambda: running_everywhere(cluster), 30, "six VMs Running")
    primary = wait_for(
        lambda: (cluster.api("GET", "/api/v1/clusters/cluster").json().get("status") or {}).get(
            "primary"
        ),
        20,
        "a primary",
    )
    where = {n: v["status"]["node"] for n, v in vms(cluster).items()}
    victim = sorted({w for w in where.values() if w != primary})[0]
    return victim, sorted(n for n, w in where.items() if w == victim)


def primary_of(cluster: RunningCluster) -> str:
    return str(cluster.api("GET", "/api/v1/clusters/cluster").json()["status"]["primary"])


def fences(cluster: RunningCluster, victim: str, outcome: str) -> float:
    """The primary's count of fences of ``victim`` with ``outcome`` (its metrics endpoint)."""
    text = cluster.node_metrics(primary_of(cluster))
    return metric_value(text, "pvc_fences_total", node=victim, outcome=outcome) or 0.0


def pid_of(cluster: RunningCluster, node: str) -> int:
    """The PID of ``node``'s daemon, checked to be still this cluster's (PIDs get reused)."""
    return cluster.cluster.pid(node)


def recovered_elsewhere(cluster: RunningCluster, victim_vms: list[str], victim: str) -> bool:
    current = vms(cluster)
    return all(
        current[n]["status"].get("phase") == "Running" and current[n]["status"]["node"] != victim
        for n in victim_vms
    )


def test_a_killed_node_is_fenced_and_its_vms_recovered(cluster: RunningCluster) -> None:
    victim, victim_vms = setup_vms(cluster)
    specs = {n: v["spec"] for n, v in vms(cluster).items()}
    with Invariants(cluster) as checks:
        killed = time.monotonic()
        cluster.cluster.signal(victim, signal.SIGKILL)
        wait_for(
            lambda: recovered_elsewhere(cluster, victim_vms, victim),
            30,
            f"{victim_vms} Running on other nodes",
        )
        took = time.monotonic() - killed
        fenced = condition(node_status(cluster, victim), "Fenced")
        assert fenced.get("status") == "True" and fenced.get("reason") == "PoweredOff"
        assert fences(cluster, victim, "fenced") == 1
    # 3 s to be declared dead plus 3 s of saving throws, counted from the last heartbeat the
    # primary saw, which can precede the kill by up to one interval; then fence and restart.
    assert 5.0 <= took < 15.0, took
    assert {n: v["spec"] for n, v in vms(cluster).items()} == specs  # no spec lost
    # Every step is on record, in order.
    events = cluster.api("GET", "/api/v1/events").json()["items"]
    steps = [e["reason"] for e in events if e["involvedObject"]["name"] == victim]
    assert [s for s in steps if s in ("NodeDead", "FenceStarted", "Fenced")] == [
        "NodeDead",
        "FenceStarted",
        "Fenced",
    ]
    # Each Recovered event follows the placement write it reports, so it may trail the VM.
    wait_for(
        lambda: (
            {
                e["involvedObject"]["name"]
                for e in cluster.api("GET", "/api/v1/events").json()["items"]
                if e["reason"] == "Recovered"
            }
            == set(victim_vms)
        ),
        10,
        f"a Recovered event for each of {victim_vms}",
    )
    assert {p for p, _ in checks.primaries} and len({e for _, e in checks.primaries}) == 1
    wait_for(
        lambda: node_status(cluster, victim).get("daemonState") == "run",
        30,
        f"{victim} powered on again and running",
    )


def test_a_node_paused_for_less_than_its_saving_throws_is_not_fenced(
    cluster: RunningCluster,
) -> None:
    victim, victim_vms = setup_vms(cluster)
    pid = pid_of(cluster, victim)
    with Invariants(cluster):
        signal_ours(pid, signal.SIGSTOP, cluster.cluster.marker(victim))
        try:
            wait_for(
                lambda: node_status(cluster, victim).get("daemonState") == "dead",
                10,
                f"{victim} declared dead",
            )
        finally:
            signal_ours(pid, signal.SIGCONT, cluster.cluster.marker(victim))
        wait_for(
            lambda: node_status(cluster, victim).get("daemonState") == "run", 10, f"{victim} back"
        )
    assert pid_alive(pid)
    assert condition(node_status(cluster, victim), "Fenced") == {}
    assert sorted(n for n, v in vms(cluster).items() if v["status"]["node"] == victim) == victim_vms


def test_a_node_paused_past_its_saving_throws_is_fenced(cluster: RunningCluster) -> None:
    victim, victim_vms = setup_vms(cluster)
    pid = pid_of(cluster, victim)
    with Invariants(cluster):
        signal_ours(pid, signal.SIGSTOP, cluster.cluster.marker(victim))
        wait_for(lambda: not pid_alive(pid), 30, f"{victim} powered off by the fence")
        wait_for(
            lambda: recovered_elsewhere(cluster, victim_vms, victim),
            30,
            "its VMs running elsewhere",
        )


def test_no_fence_in_maintenance_mode(cluster: RunningCluster) -> None:
    victim, victim_vms = setup_vms(cluster, maintenance=True)
    with Invariants(cluster):
        cluster.cluster.signal(victim, signal.SIGKILL)
        cond = wait_for(
            lambda: condition(node_status(cluster, victim), "Fenced") or None,
            30,
            "the Fenced condition",
        )
        assert cond["status"] == "False" and cond["reason"] == "FencingSuspended"
        assert all(vms(cluster)[n]["status"]["node"] == victim for n in victim_vms)
        apply(cluster, cluster_object(maintenance=False))
        wait_for(
            lambda: recovered_elsewhere(cluster, victim_vms, victim),
            30,
            "recovery once maintenance is off",
        )


def test_a_failed_fence_recovers_nothing(cluster: RunningCluster) -> None:
    victim, victim_vms = setup_vms(cluster)
    node = cluster.api("GET", f"/api/v1/nodes/{victim}").json()
    node.pop("status")
    node["spec"]["fence"] = {"agent": "exec", "command": ["/bin/false"]}
    assert cluster.api("PUT", f"/api/v1/nodes/{victim}", json=node).status_code == 200
    with Invariants(cluster):
        cluster.cluster.signal(victim, signal.SIGKILL)
        cond = wait_for(
            lambda: (
                (c := condition(node_status(cluster, victim), "Fenced")).get("reason")
                == "FenceFailed"
                and c
            ),
            30,
            "a failed fence",
        )
        assert cond["status"] == "False" and "not recovered" in cond["message"]
        assert fences(cluster, victim, "failed") >= 1
        assert all(vms(cluster)[n]["status"]["node"] == victim for n in victim_vms)


def test_a_node_that_never_checked_in_is_never_fenced(cluster: RunningCluster) -> None:
    setup_vms(cluster)
    ghost = {
        "apiVersion": "pvc/v1",
        "kind": "Node",
        "metadata": {"name": "ghost"},
        "spec": {"fence": {"agent": "exec", "command": ["/bin/true"]}},
    }
    apply(cluster, ghost)
    # Twice the fence window: a node still in init is not fenced for being slow.
    holds_for(
        lambda: condition(node_status(cluster, "ghost"), "Fenced") == {}, 12, "ghost unfenced", 0.5
    )
