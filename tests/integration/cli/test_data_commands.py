"""pvcctl vm rename, cluster backup and cluster restore on a local cluster (real ZooKeeper,
pvcnoded and pvcapid processes, libvirt's test driver, real qcow2 volumes): a renamed VM
starts on the same volume bytes; a backup restored into a wiped cluster runs its VMs."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import wait_for
from tests.localcluster_fixture import RunningCluster, start_cluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCluster]:
    yield from start_cluster(tmp_path_factory.mktemp("data"), nodes=1)


YAML = {"content-type": "application/yaml"}


def vm(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "pvc/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": name, "labels": {"set": "data"}},
        "spec": {"memory": "64Mi", "shutdownTimeout": "2s", **spec},
    }


def phase(cluster: RunningCluster, name: str) -> str | None:
    answer = cluster.api("GET", f"/api/v1/vms/{name}")
    return (answer.json().get("status") or {}).get("phase") if answer.status_code == 200 else None


def qemu_io(path: Path, command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["qemu-io", "-f", "qcow2", "-c", command, str(path)],
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_a_renamed_vm_starts_on_the_same_volume(cluster: RunningCluster) -> None:
    pool = cluster.cluster.shared_pool_dir()
    cluster.wait_pool_reached("shared", 1, 30)
    cluster.apply(vm("db1", disks=[{"name": "root", "pool": "shared", "size": "16Mi"}]))
    wait_for(lambda: phase(cluster, "db1") == "Running", 30, "db1 to run")
    volume = pool / "db1_root.qcow2"
    assert qemu_io(volume, "write -P 0xab 0 1M").returncode == 0

    running = cluster.pvcctl("vm", "rename", "db1", "db2")
    assert running.returncode == 1
    assert "cannot be renamed now: runStrategy is Always" in running.stderr
    rename = "/api/v1/vms/{}/rename"
    bad = cluster.api("POST", rename.format("db1"), json={"newName": "Not_A_Label"})
    assert bad.status_code == 422, bad.text
    unknown = cluster.api("POST", rename.format("nope"), json={"newName": "db2"})
    assert unknown.status_code == 404, unknown.text

    assert cluster.api("POST", "/api/v1/vms/db1/stop").status_code == 200
    wait_for(lambda: phase(cluster, "db1") == "Stopped", 30, "db1 to stop")
    renamed = cluster.pvcctl("vm", "rename", "db1", "db2")
    assert renamed.returncode == 0, renamed.stderr
    assert renamed.stdout.strip() == "vm/db1 renamed to db2"
    assert cluster.api("GET", "/api/v1/vms/db1").status_code == 404

    def old_domain_removed() -> bool:
        answer = cluster.api("GET", "/api/v1/events", params={"kind": "vm", "name": "db1"})
        return any(e["reason"] == "DomainRemoved" for e in answer.json()["items"])

    wait_for(old_domain_removed, 30, "node1 to remove the domain of the old name")

    assert cluster.api("POST", "/api/v1/vms/db2/start").status_code == 200
    wait_for(lambda: phase(cluster, "db2") == "Running", 30, "db2 to run")
    status = cluster.api("GET", "/api/v1/vms/db2").json()["status"]
    assert [v["volume"] for v in status["volumes"]] == ["db1_root.qcow2"]
    # The node publishes the domain XML within a second of defining it (its console
    # publisher's next look), so it may still be on its way when db2 is Running.
    xml = wait_for(
        lambda: (
            (r := cluster.api("GET", "/api/v1/vms/db2/domainxml")).status_code == 200 and r.text
        ),
        10,
        "db2's domain XML to be published",
    )
    assert "db1_root.qcow2" in xml
    read = qemu_io(volume, "read -P 0xab 0 1M")
    assert read.returncode == 0 and "Pattern verification failed" not in read.stdout
    assert sorted(p.name for p in pool.iterdir() if p.name.startswith("db")) == [
        "db1_root.qcow2"
    ], "no volume was made for the new name"
    events = cluster.api("GET", "/api/v1/events", params={"kind": "vm", "name": "db2"}).json()
    reasons = [e["reason"] for e in events["items"]]
    assert "VolumeCreated" in reasons and "Renamed" in reasons, reasons


def test_a_backup_restored_into_a_wiped_cluster_runs_its_vms(
    cluster: RunningCluster, tmp_path: Path
) -> None:
    cluster.apply(vm("plain1"), vm("plain2", runStrategy="Halted"))
    taken = cluster.pvcctl("cluster", "backup")
    assert taken.returncode == 0, taken.stderr
    assert "status:" not in taken.stdout and "resourceVersion" not in taken.stdout
    docs = [d for d in yaml.safe_load_all(taken.stdout) if d]
    kinds = [d["kind"] for d in docs]
    assert kinds == sorted(kinds, key=["StoragePool", "Node", "VirtualMachine"].index)
    assert {d["metadata"]["name"] for d in docs if d["kind"] == "VirtualMachine"} >= {
        "plain1",
        "plain2",
    }
    saved = tmp_path / "backup.yaml"
    saved.write_text(taken.stdout)

    over = cluster.api("POST", "/api/v1/restore", content=saved.read_bytes(), headers=YAML)
    assert over.status_code == 409 and "the cluster is not empty" in over.text

    # `pvcctl local down` and up: a fresh ZooKeeper, empty pools; the same nodes register.
    cluster.cluster.down()
    cluster.state, _ = cluster.cluster.up(timeout=90)
    assert cluster.items("vms") == []
    restored = cluster.pvcctl("cluster", "restore", str(saved))
    assert restored.returncode == 0, restored.stderr
    assert "virtualmachine/plain1 created (restore)" in restored.stdout
    # db2 (a VM on a volume) is in the backup when the rename test ran before this one in
    # the same cluster: it must run again too. Alone, this test has plain1 and plain2 only.
    running = ["plain1"] + [n for n in ("db2",) if n in {d["metadata"]["name"] for d in docs}]
    wait_for(
        lambda: all(phase(cluster, name) == "Running" for name in running),
        30,
        " and ".join(running) + " to run",
    )
    wait_for(lambda: phase(cluster, "plain2") == "Stopped", 30, "plain2 to be Stopped")
    plain1 = cluster.api("GET", "/api/v1/vms/plain1").json()
    assert plain1["metadata"]["labels"] == {"set": "data"}
    again = cluster.api(
        "POST",
        "/api/v1/restore",
        params={"merge": "true"},
        content=saved.read_bytes(),
        headers=YAML,
    )
    assert again.status_code == 200, again.text
    assert {i["outcome"] for i in again.json()["items"]} == {"unchanged"}
