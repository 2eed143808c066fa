"""docs/gitops-example.sh against a real local cluster: apply, wait, diff, then prune."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import cast

import pytest
import yaml

from tests.localcluster_fixture import PVCCTL, RunningCluster, start_cluster

SCRIPT = Path(__file__).resolve().parents[2] / "docs" / "gitops-example.sh"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCluster]:
    # One retry of the start: on a machine shared with other test runs, a free port
    # picked for the local ZooKeeper can be taken by another process before it binds.
    for attempt in (1, 2):
        starting = cast(
            Generator[RunningCluster, None, None],
            start_cluster(tmp_path_factory.mktemp("gitops"), nodes=2),
        )
        try:
            running = next(starting)
        except pytest.fail.Exception:
            if attempt == 2:
                raise
            continue
        try:
            yield running
        finally:
            starting.close()  # runs start_cluster's teardown: stops every process it started
        return


def vm(name: str) -> str:
    doc = {
        "apiVersion": "pvc/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": name, "labels": {"app": "shop"}},
        "spec": {"memory": "256Mi"},
    }
    return yaml.safe_dump(doc)


def sync(cluster: RunningCluster, folder: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PVC_SERVER": cluster.server, "PVCCTL": PVCCTL, "WAIT_TIMEOUT": "60s"}
    return subprocess.run(
        ["bash", str(SCRIPT), str(folder), "app=shop"],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
    )


def test_the_example_script_syncs_waits_verifies_and_prunes(
    cluster: RunningCluster, tmp_path: Path
) -> None:
    (tmp_path / "shop-a.yaml").write_text(vm("shop-a"))
    (tmp_path / "shop-b.yaml").write_text(vm("shop-b"))
    first = sync(cluster, tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "drift found: applying" in first.stdout
    assert "virtualmachine/shop-a created" in first.stdout
    assert "all vms condition met" in first.stdout
    assert first.stdout.rstrip().endswith("synced")
    assert all(v["status"]["phase"] == "Running" for v in cluster.items("vms"))

    second = sync(cluster, tmp_path)
    assert second.returncode == 0, second.stderr
    assert "in sync: nothing to apply" in second.stdout

    (tmp_path / "shop-b.yaml").unlink()
    third = sync(cluster, tmp_path)
    assert third.returncode == 0, third.stdout + third.stderr
    assert "virtualmachine/shop-b pruned" in third.stdout
    assert [v["metadata"]["name"] for v in cluster.items("vms")] == ["shop-a"]


def test_the_example_script_fails_on_bad_manifests(cluster: RunningCluster, tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("apiVersion: pvc/v1\nkind: VirtualMachine\n")
    result = sync(cluster, tmp_path)
    assert result.returncode == 2
    assert "diff failed (exit 2)" in result.stderr
