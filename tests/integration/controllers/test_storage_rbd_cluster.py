"""An rbd StoragePool on the local cluster against a real single-host Ceph (tests/ceph.py):
nodes reach it, a VM's volume is an RBD image created once that keeps its bytes through a
migrate, clones start from an image, --delete-volumes removes the image, and the cephx key
never leaves the store. Skipped, with the reason, where Ceph cannot start here."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from tests.ceph import SingleHostCeph
from tests.helpers import wait_for
from tests.localcluster_fixture import RunningCluster, start_cluster

MIB = 2**20


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory,
    ceph: SingleHostCeph,
) -> Iterator[RunningCluster]:
    yield from start_cluster(tmp_path_factory.mktemp("rbd-cluster"), nodes=3)


@pytest.fixture(scope="module")
def pool(cluster: RunningCluster, ceph: SingleHostCeph) -> str:
    cluster.apply(ceph.storage_pool("ceph"))

    cluster.wait_pool_reached("ceph", 3, 60)
    return "ceph"


def vm(name: str, disk: dict[str, Any], home: str = "node1") -> dict[str, Any]:
    return {
        "apiVersion": "pvc/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": name},
        "spec": {
            "memory": "64Mi",
            "shutdownTimeout": "2s",
            "placement": {"home": home},
            "disks": [{"name": "data", "pool": "ceph", **disk}],
        },
    }


def running_on(cluster: RunningCluster, name: str, node: str | None = None) -> bool:
    answer = cluster.api("GET", f"/api/v1/vms/{name}")
    status = answer.json().get("status") or {} if answer.status_code == 200 else {}
    return status.get("phase") == "Running" and (node is None or status.get("node") == node)


def images(ceph: SingleHostCeph) -> list[str]:
    return sorted(json.loads(ceph.admin("ls", "-p", ceph.pool, "--format", "json", program="rbd")))


def rbd_io(ceph: SingleHostCeph, image: str, command: str) -> subprocess.CompletedProcess[str]:
    # As client.admin through its ceph.conf (which names its keyring): no key on a command line.
    return subprocess.run(
        ["qemu-io", "-f", "raw", "-c", command, f"rbd:{ceph.pool}/{image}:conf={ceph.conf}"],
        capture_output=True,
        text=True,
        timeout=60,
    )


def has_pattern(ceph: SingleHostCeph, image: str, pattern: int) -> bool:
    read = rbd_io(ceph, image, f"read -P {pattern:#x} 0 64k")
    return read.returncode == 0 and "Pattern verification failed" not in read.stdout


def test_the_key_never_leaves_the_store(
    cluster: RunningCluster,
    pool: str,
    ceph: SingleHostCeph,
) -> None:
    for answer in (
        cluster.api("GET", "/api/v1/storagepools/ceph").text,
        cluster.api("GET", "/api/v1/storagepools").text,
        cluster.api("GET", "/api/v1/events").text,
        cluster.pvcctl("get", "pool", "ceph", "-o", "yaml").stdout,
        cluster.pvcctl("get", "pools", "-o", "wide").stdout,
    ):
        assert ceph.key not in answer
    assert (
        cluster.api("GET", "/api/v1/storagepools/ceph").json()["spec"]["rbd"]["key"] == "********"
    )
    logs = "".join(p.read_text() for p in cluster.cluster.dir.glob("*.log"))
    assert ceph.key not in logs
    # Applying the read-back pool keeps the stored key: the nodes still reach it.
    back = cluster.api("GET", "/api/v1/storagepools/ceph").json()
    back.pop("status", None)
    assert cluster.api("PUT", "/api/v1/storagepools/ceph", json=back).status_code == 200
    stored = cluster.api("GET", "/api/v1/storagepools/ceph").json()["status"]["nodes"]
    assert all(n["reachable"] for n in stored)


def test_an_rbd_volume_is_created_once_and_follows_its_vm(
    cluster: RunningCluster,
    pool: str,
    ceph: SingleHostCeph,
) -> None:
    cluster.apply(vm("rbdvm", {"size": "32Mi"}))
    wait_for(lambda: running_on(cluster, "rbdvm", "node1"), 60, "rbdvm to run on node1")
    assert "rbdvm_data" in images(ceph)
    status = cluster.api("GET", "/api/v1/vms/rbdvm").json()["status"]
    assert status["volumes"] == [
        {
            "disk": "data",
            "pool": "ceph",
            "volume": "rbdvm_data",
            "size": 32 * MIB,
            "poolType": "rbd",
            "createdBy": "node1",
        }
    ]
    assert rbd_io(ceph, "rbdvm_data", "write -P 0xcd 0 64k").returncode == 0

    moved = cluster.pvcctl("vm", "migrate", "rbdvm", "--to", "node3", "--wait")
    assert moved.returncode == 0, moved.stderr
    assert running_on(cluster, "rbdvm", "node3")
    assert has_pattern(ceph, "rbdvm_data", 0xCD)
    assert [i for i in images(ceph) if i.startswith("rbdvm")] == ["rbdvm_data"]

    qcow = vm("rbdbad", {"size": "32Mi", "format": "qcow2"})
    refused = cluster.api("POST", "/api/v1/vms", json=qcow)
    assert refused.status_code == 422 and "raw images only" in refused.text

    gone = cluster.pvcctl("delete", "vm", "rbdvm", "--delete-volumes")
    assert gone.returncode == 0, gone.stderr
    wait_for(lambda: "rbdvm_data" not in images(ceph), 60, "the RBD image to be deleted")


def test_a_clone_starts_from_an_rbd_image(
    cluster: RunningCluster,
    pool: str,
    ceph: SingleHostCeph,
) -> None:
    ceph.admin("create", "--size", "16", f"{ceph.pool}/golden", program="rbd")
    assert rbd_io(ceph, "golden", "write -P 0x77 0 64k").returncode == 0
    cluster.apply(vm("rbdclone", {"from": "golden", "size": "48Mi"}, home="node2"))
    wait_for(lambda: running_on(cluster, "rbdclone", "node2"), 60, "rbdclone to run")
    assert has_pattern(ceph, "rbdclone_data", 0x77)
    info = json.loads(
        ceph.admin("info", f"{ceph.pool}/rbdclone_data", "--format", "json", program="rbd")
    )
    assert info["size"] == 48 * MIB
    assert info["parent"]["image"] == "golden"
    assert cluster.pvcctl("delete", "vm", "rbdclone", "--delete-volumes").returncode == 0
    wait_for(lambda: "rbdclone_data" not in images(ceph), 60, "the clone to be deleted")
    assert "golden" in images(ceph), "the origin is not PVC's to delete"


def test_growing_the_size_grows_the_image(
    cluster: RunningCluster,
    pool: str,
    ceph: SingleHostCeph,
) -> None:
    cluster.apply(vm("rbdgrow", {"size": "16Mi"}))
    wait_for(lambda: running_on(cluster, "rbdgrow"), 60, "rbdgrow to run")
    cluster.apply(vm("rbdgrow", {"size": "40Mi"}))

    def grown() -> bool:
        info = json.loads(
            ceph.admin("info", f"{ceph.pool}/rbdgrow_data", "--format", "json", program="rbd")
        )
        return bool(info["size"] == 40 * MIB)

    wait_for(grown, 60, "the image to grow to 40Mi")
    assert cluster.pvcctl("delete", "vm", "rbdgrow", "--delete-volumes").returncode == 0
    wait_for(lambda: "rbdgrow_data" not in images(ceph), 60, "the image to be deleted")
