"""At scale, as a user notices it (bench/scale.py measures 64 nodes and 10,000 VMs; this is
its cheap cut for the test run): 5 nodes (4 of them packed in one process, as the bench packs
them) take 200 VMs applied in one request, and once they run, ZooKeeper's write rate (its own
zxid, not PVC's word) is back to what it was with no VMs: idle cost grows with nodes, not VMs."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from localcluster import observe
from tests.helpers import wait_for
from tests.localcluster_fixture import RunningCluster, start_cluster

VMS = 200
WINDOW = 2.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCluster]:
    state_dir: Path = tmp_path_factory.mktemp("scale")
    yield from start_cluster(state_dir, nodes=5, coordinators=1, nodes_per_process=4)


def vm(name: str) -> dict[str, object]:
    return {
        "apiVersion": "pvc/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": name},
        "spec": {"memory": "16Mi", "vcpus": 1},
    }


def test_200_vms_converge_and_idle_zookeeper_writes_do_not_grow_with_them(
    cluster: RunningCluster,
) -> None:
    port = cluster.state.zookeeper_port
    # A 1 s heartbeat: enough writes in a short window to compare.
    fencing = {"keepaliveInterval": "1s", "fenceIntervals": 6, "savingThrows": 6}
    cluster.apply(
        {
            "apiVersion": "pvc/v1",
            "kind": "Cluster",
            "metadata": {"name": "cluster"},
            "spec": {"fencing": fencing},
        }
    )
    idle_before, _ = observe.writes_per_second(port, WINDOW)

    started = time.monotonic()
    # One request, as `pvcctl apply -f` of one file sends it.
    answer = httpx.post(
        f"{cluster.server}/api/v1/apply", json=[vm(f"s{i:03d}") for i in range(VMS)], timeout=120
    )
    assert answer.status_code == 200, answer.text
    applied = time.monotonic() - started

    def all_running() -> bool:
        items = cluster.items("vms")
        return len(items) == VMS and all(
            (i.get("status") or {}).get("phase") == "Running" for i in items
        )

    wait_for(all_running, 90, f"{VMS} VMs Running", interval=0.5)
    converged = time.monotonic() - started
    nodes = {i["status"]["node"] for i in cluster.items("vms")}
    assert len(nodes) == 5, f"placed on {sorted(nodes)} only"

    # Back to the idle rate of no VMs (+50 %, +2/s for noise), not one write per VM.
    def idle_again() -> float | None:
        rate, _ = observe.writes_per_second(port, WINDOW)
        return rate if rate <= idle_before * 1.5 + 2.0 else None

    wait_for(idle_again, 30, f"idle writes back near {idle_before:.1f}/s", interval=0)
    print(f"applied in {applied:.1f} s, Running in {converged:.1f} s; idle {idle_before:.1f}/s")
