"""The primary role with real processes: graceful switchover, crash takeover, a paused primary."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from localcluster.process import signal_ours
from tests.ha_manifests import cluster_object
from tests.helpers import holds_for, wait_for
from tests.localcluster_fixture import RunningCluster, start_cluster


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[RunningCluster]:
    yield from start_cluster(tmp_path / "primary", nodes=3, session_timeout="4s")


def apply_cluster(cluster: RunningCluster, **spec: Any) -> None:
    cluster.apply(cluster_object(**spec))


def primary(cluster: RunningCluster) -> tuple[str | None, int | None]:
    status = cluster.api("GET", "/api/v1/clusters/cluster").json().get("status") or {}
    return status.get("primary"), status.get("epoch")


def router_states(cluster: RunningCluster) -> dict[str, str]:
    return {
        n["metadata"]["name"]: (n.get("status") or {}).get("routerState", "")
        for n in cluster.items("nodes")
    }


def settled_primary(cluster: RunningCluster, want: str | None = None) -> tuple[str, int]:
    """Exactly one primary, the rest secondary; with ``want``, that one being ``want`` (right
    after a switchover is asked for, the old primary is still settled for a moment)."""

    def one_primary() -> tuple[str, int] | None:
        name, epoch = primary(cluster)
        states = router_states(cluster)
        others = {n: s for n, s in states.items() if n != name}
        if (
            name
            and epoch
            and (want is None or name == want)
            and states.get(name) == "primary"
            and set(others.values()) == {"secondary"}
        ):
            return name, epoch
        return None

    return wait_for(
        one_primary, 30, f"exactly one primary{f' ({want})' if want else ''}, the rest secondary"
    )


def pid_of(cluster: RunningCluster, node: str) -> int:
    """The PID of ``node``'s daemon, checked to be still this cluster's (PIDs get reused)."""
    return cluster.cluster.pid(node)


def test_graceful_switchover_to_the_preferred_node(cluster: RunningCluster) -> None:
    apply_cluster(cluster)
    old, epoch = settled_primary(cluster)
    target = sorted(n for n in ("node1", "node2", "node3") if n != old)[0]
    started = time.monotonic()
    apply_cluster(cluster, primary=target)
    name, new_epoch = settled_primary(cluster, target)
    took = time.monotonic() - started
    assert name == target and new_epoch == epoch + 1
    assert took < 5, took

    # The preference holds: the old primary does not force itself back in.
    holds_for(lambda: primary(cluster) == (target, new_epoch), 2.0, f"{target} primary")


def test_a_killed_primary_is_replaced_and_fenced(cluster: RunningCluster) -> None:
    apply_cluster(cluster)
    old, epoch = settled_primary(cluster)
    vm = {
        "apiVersion": "pvc/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": "p1"},
        "spec": {"memory": "64Mi", "placement": {"home": old}},
    }
    assert cluster.api("POST", "/api/v1/apply", json=[vm]).status_code == 200
    wait_for(
        lambda: (
            (cluster.api("GET", "/api/v1/vms/p1").json().get("status") or {}).get("phase")
            == "Running"
        ),
        20,
        "p1 Running on the primary",
    )
    cluster.cluster.signal(old, signal.SIGKILL)
    _new, new_epoch = wait_for(
        lambda: (p := primary(cluster))[0] not in (None, old) and p, 30, "a new primary"
    )
    assert new_epoch is not None and new_epoch > epoch

    def p1_elsewhere() -> bool:
        status = cluster.api("GET", "/api/v1/vms/p1").json().get("status") or {}
        return status.get("phase") == "Running" and status.get("node") not in (None, old)

    wait_for(p1_elsewhere, 40, "p1 recovered by the new primary")


def test_a_paused_primary_past_its_session_steps_down_on_return(
    cluster: RunningCluster,
) -> None:
    apply_cluster(cluster, maintenance=True)  # no fencing: the old primary must come back
    old, epoch = settled_primary(cluster)
    pid = pid_of(cluster, old)
    signal_ours(pid, signal.SIGSTOP, cluster.cluster.marker(old))
    try:
        new, new_epoch = wait_for(
            lambda: (p := primary(cluster))[0] not in (None, old) and p, 30, "a new primary"
        )
    finally:
        signal_ours(pid, signal.SIGCONT, cluster.cluster.marker(old))
    assert new_epoch is not None and new_epoch > epoch
    name, final_epoch = settled_primary(cluster)
    assert (name, final_epoch) == (new, new_epoch)
    log = cluster.cluster.dir / f"{old}.log"
    wait_for(
        lambda: 'why="session lost"' in log.read_text(), 10, f"{old} relinquished: session lost"
    )
    # Its lost session is over: asked to, it becomes primary again.
    apply_cluster(cluster, maintenance=True, primary=old)
    wait_for(
        lambda: primary(cluster)[0] == old and router_states(cluster)[old] == "primary",
        30,
        f"{old} primary again",
    )


def test_a_new_primary_moves_nothing_that_is_placed(cluster: RunningCluster) -> None:
    # Default (slow) fencing: within this test nobody is fenced, so nothing may move.
    body = {"apiVersion": "pvc/v1", "kind": "Cluster", "metadata": {"name": "cluster"}, "spec": {}}
    assert cluster.api("POST", "/api/v1/apply", json=[body]).status_code == 200
    old, _epoch = settled_primary(cluster)
    vms = [
        {
            "apiVersion": "pvc/v1",
            "kind": "VirtualMachine",
            "metadata": {"name": f"s{i}"},
            "spec": {"memory": "64Mi"},
        }
        for i in range(9)
    ]
    assert cluster.api("POST", "/api/v1/apply", json=vms).status_code == 200

    def placements() -> dict[str, str]:
        return {
            v["metadata"]["name"]: (v.get("status") or {}).get("node") or ""
            for v in cluster.items("vms")
        }

    before = wait_for(lambda: (p := placements()) and all(p.values()) and p, 30, "all placed")
    cluster.cluster.signal(old, signal.SIGKILL)
    wait_for(lambda: (p := primary(cluster))[0] not in (None, old) and p, 30, "a new primary")

    holds_for(lambda: placements() == before, 5.0, "every placement as before", 0.2)
    new_primary = primary(cluster)[0]
    log = (cluster.cluster.dir / f"{new_primary}.log").read_text()
    assert "event=placed" not in log.split("state=takeover")[-1]
