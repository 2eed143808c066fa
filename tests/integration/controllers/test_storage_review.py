"""An adversarial review of storage pools (issue 12) on the local cluster (real ZooKeeper,
pvcnoded and pvcapid processes, libvirt's test driver, real qcow2 files): each test is an
input or an interleaving that breaks a promise of the feature, marked xfail (strict) with
the bug it shows, until the product is fixed."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import holds_for, wait_for
from tests.integration.controllers.test_storage_pools import (
    events,
    fields,
    has_pattern,
    pool,
    qemu_io,
    running_on,
    status,
    vm,
)
from tests.localcluster_fixture import RunningCluster, start_cluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCluster]:
    yield from start_cluster(tmp_path_factory.mktemp("review"), nodes=3)


@pytest.fixture(scope="module")
def shared(cluster: RunningCluster) -> Path:
    folder = cluster.cluster.shared_pool_dir()

    cluster.wait_pool_reached("shared", 3, 30)
    return folder


def reasons(cluster: RunningCluster, name: str) -> list[str]:
    return [str(e["reason"]) for e in events(cluster, name)]


def started(cluster: RunningCluster, name: str, disks: list[dict[str, Any]], home: str) -> None:
    """Apply VM ``name`` placed on ``home`` and wait until it runs there."""
    cluster.apply(vm(name, disks, home))
    wait_for(lambda: running_on(cluster, name, home), 30, f"{name} to run on {home}")


def delete_volumes(cluster: RunningCluster, name: str) -> None:
    gone = cluster.api("DELETE", f"/api/v1/vms/{name}", params={"deleteVolumes": "true"})
    assert gone.status_code == 200, gone.text


def test_vms_whose_names_run_together_never_share_a_volume(
    cluster: RunningCluster, shared: Path
) -> None:
    started(cluster, "ab", [{"name": "c-d", "pool": "shared", "size": "32Mi"}], "node1")
    volume = shared / "ab_c-d.qcow2"
    assert qemu_io(volume, "write -P 0x3c 0 1M").returncode == 0

    other = vm("ab-c", [{"name": "d", "pool": "shared", "size": "32Mi"}], "node2")
    answer = cluster.api("POST", "/api/v1/apply", json=[other])
    if answer.status_code == 200:
        wait_for(
            lambda: running_on(cluster, "ab-c") or status(cluster, "ab-c").get("reason"),
            30,
            "ab-c to run or say why not",
        )
        delete_volumes(cluster, "ab-c")
        wait_for(
            lambda: not volume.exists() or "VolumeDeleted" in reasons(cluster, "ab-c"),
            60,
            "the volumes of ab-c to be deleted",
        )
    assert volume.exists(), "the volume of ab (running) was deleted with ab-c's volumes"
    assert has_pattern(volume, 0x3C), "ab's bytes are intact"
    assert running_on(cluster, "ab", "node1")


def test_a_vm_on_an_existing_local_volume_is_not_migrated(
    cluster: RunningCluster, shared: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "lv"
    folder.mkdir()
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", str(folder / "kept.qcow2"), "16M"], check=True
    )
    cluster.apply(pool("lv", type="local", path=str(folder)))
    disks = [{"name": "data", "pool": "lv", "volume": "kept.qcow2"}]
    unpinned = cluster.api("POST", "/api/v1/apply", json=[vm("onlocal", disks, "node2")])
    assert unpinned.status_code == 422, unpinned.text
    assert "pin the VM to it with placement.nodes" in unpinned.text
    pinned = vm("onlocal", disks, "node2")
    pinned["spec"]["placement"]["nodes"] = ["node2"]
    cluster.apply(pinned)
    wait_for(lambda: running_on(cluster, "onlocal", "node2"), 30, "onlocal to run on node2")
    movable = next(c for c in status(cluster, "onlocal")["conditions"] if c["type"] == "Movable")
    assert movable["status"] == "False", movable

    moved = cluster.api(
        "POST", "/api/v1/vms/onlocal/migrate", json={"node": "node1", "force": True}
    )
    assert moved.status_code == 409, f"a local volume's VM was moved: {moved.text}"
    assert "volume kept.qcow2 in local pool lv on node2" in moved.text


def test_a_volume_another_vm_uses_is_not_deleted_with_its_creator(
    cluster: RunningCluster, shared: Path
) -> None:
    started(cluster, "owner", [{"name": "d", "pool": "shared", "size": "32Mi"}], "node1")
    volume = shared / "owner_d.qcow2"
    assert qemu_io(volume, "write -P 0x42 0 1M").returncode == 0
    user = vm("borrower", [{"name": "d", "pool": "shared", "volume": "owner_d.qcow2"}], "node3")
    if cluster.api("POST", "/api/v1/apply", json=[user]).status_code != 200:
        return  # refusing to name another VM's volume is a fix too
    wait_for(lambda: running_on(cluster, "borrower", "node3"), 30, "borrower to run")

    delete_volumes(cluster, "owner")
    wait_for(
        lambda: not volume.exists() or "VolumeKept" in reasons(cluster, "owner"),
        60,
        "owner's volume to be deleted or kept",
    )
    assert volume.exists(), "the volume borrower runs on was deleted"
    assert has_pattern(volume, 0x42)


def test_a_pool_disk_added_to_a_namesake_of_a_vm_being_reaped_is_refused(
    cluster: RunningCluster, shared: Path
) -> None:
    # A clone of base's volume keeps it (VolumeInUse): base's deletion stays pending.
    root = [{"name": "root", "pool": "shared", "size": "32Mi"}]
    started(cluster, "base", root, "node1")
    started(
        cluster, "kid", [{"name": "root", "pool": "shared", "from": "base_root.qcow2"}], "node2"
    )
    delete_volumes(cluster, "base")
    wait_for(lambda: "VolumeKept" in reasons(cluster, "base"), 60, "base's volume to be kept")
    again = cluster.api("POST", "/api/v1/vms", json=vm("base", root, "node1"))
    assert again.status_code == 409, again.text

    bare = cluster.api("POST", "/api/v1/vms", json=vm("base", [], "node1"))
    assert bare.status_code == 201, bare.text
    patched = cluster.api(
        "PATCH",
        "/api/v1/vms/base",
        json={"spec": {"disks": root}},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert patched.status_code == 409, f"the pool disk was admitted: {patched.text}"


def test_changing_the_format_of_a_created_volume_is_refused(
    cluster: RunningCluster, shared: Path
) -> None:
    started(cluster, "fmt", [{"name": "d", "pool": "shared", "size": "32Mi"}], "node1")
    current = cluster.api("GET", "/api/v1/vms/fmt").json()
    current["spec"]["disks"][0]["format"] = "raw"
    changed = cluster.api("PUT", "/api/v1/vms/fmt", json=current)
    assert changed.status_code == 422, f"the format change was admitted: {changed.text}"
    assert fields(changed) == ["spec.disks[0].format"]


def test_an_apply_refused_by_admission_writes_nothing(
    cluster: RunningCluster, shared: Path, tmp_path: Path
) -> None:
    documents: list[dict[str, Any]] = [
        pool("written", type="shared", path=str(tmp_path)),
        vm("toobig", [{"name": "d", "pool": "shared", "size": "900Ti"}]),
    ]
    answer = cluster.api("POST", "/api/v1/apply", json=documents)
    assert answer.status_code == 422, answer.text
    assert any(f.endswith("spec.disks[0].size") for f in fields(answer)), answer.text
    assert cluster.api("GET", "/api/v1/storagepools/written").status_code == 404


def test_a_pool_in_use_is_neither_deleted_nor_pruned_nor_moved(
    cluster: RunningCluster, shared: Path, tmp_path: Path
) -> None:
    """Held up: delete, prune and a path change of a pool a VM uses are refused."""
    folder = tmp_path / "used"
    folder.mkdir()
    labelled = pool("used", type="shared", path=str(folder))
    labelled["metadata"]["labels"] = {"set": "review"}
    cluster.apply(labelled)
    cluster.apply(vm("user1", [{"name": "d", "pool": "used", "size": "16Mi"}]))
    wait_for(lambda: running_on(cluster, "user1"), 30, "user1 to run")
    assert cluster.api("DELETE", "/api/v1/storagepools/used").status_code == 409
    kept = {"name": "other", "labels": {"set": "review"}}
    pruned = cluster.api(
        "POST",
        "/api/v1/apply",
        params={"prune": "true", "labelSelector": "set=review"},
        json=[{**pool("other", type="shared", path=str(folder)), "metadata": kept}],
    )
    assert pruned.status_code == 409, pruned.text
    moved = cluster.api(
        "PATCH",
        "/api/v1/storagepools/used",
        json={"spec": {"path": str(tmp_path)}},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert moved.status_code == 422, moved.text
    holds_for(lambda: (folder / "user1_d.qcow2").exists(), 1, "the volume to stay")


def test_a_pool_turned_rbd_with_the_mask_for_its_key_is_refused(
    cluster: RunningCluster, shared: Path, tmp_path: Path
) -> None:
    cluster.apply(pool("flip", type="shared", path=str(tmp_path)))
    masked = pool(
        "flip", type="rbd", rbd={"monitors": ["10.0.0.1"], "pool": "rbd", "key": "********"}
    )
    answer = cluster.api("PUT", "/api/v1/storagepools/flip", json=masked)
    assert answer.status_code == 422, f"the mask was taken for the key: {answer.text}"
    assert fields(answer) == ["spec.rbd.key"]


def test_a_file_already_under_a_new_volumes_name_is_not_taken_over(
    cluster: RunningCluster, shared: Path
) -> None:
    stray = shared / "stray_d.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(stray), "8M"], check=True)
    assert qemu_io(stray, "write -P 0x66 0 1M").returncode == 0
    cluster.apply(vm("stray", [{"name": "d", "pool": "shared", "size": "32Mi"}]))
    wait_for(
        lambda: status(cluster, "stray").get("reason") == "VolumeExists",
        30,
        "stray to wait, saying a volume of that name exists",
    )
    holds_for(lambda: not running_on(cluster, "stray"), 2, "stray not to start on it")
    assert has_pattern(stray, 0x66)
    assert "not taken over" in str(status(cluster, "stray")["conditions"])
