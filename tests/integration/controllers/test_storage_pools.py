"""Storage pools on the local cluster (real ZooKeeper, pvcnoded and pvcapid processes, libvirt's
test driver, real qcow2 files): a volume is created once and follows its VM through a
migrate and a failover with its bytes; clones start from an image and grow; bad input is
refused with the field; --delete-volumes deletes, a plain delete keeps; a local volume binds
its VM to its node."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.ha_manifests import cluster_object
from tests.helpers import holds_for, wait_for
from tests.localcluster_fixture import RunningCluster, start_cluster

MIB = 2**20


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCluster]:
    yield from start_cluster(tmp_path_factory.mktemp("pools"), nodes=3)


@pytest.fixture(scope="module")
def shared(cluster: RunningCluster) -> Path:
    """The ``shared`` pool `local up` made, reached by every node."""
    folder = cluster.cluster.shared_pool_dir()

    cluster.wait_pool_reached("shared", 3, 30)
    return folder


def vm(name: str, disks: list[dict[str, Any]], home: str = "node1") -> dict[str, Any]:
    return {
        "apiVersion": "pvc/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": name},
        "spec": {
            "memory": "64Mi",
            "shutdownTimeout": "2s",
            "placement": {"home": home},
            "disks": disks,
        },
    }


def pool(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "pvc/v1", "kind": "StoragePool", "metadata": {"name": name}, "spec": spec}


def status(cluster: RunningCluster, name: str) -> dict[str, Any]:
    answer = cluster.api("GET", f"/api/v1/vms/{name}")
    return dict(answer.json().get("status") or {}) if answer.status_code == 200 else {}


def running_on(cluster: RunningCluster, name: str, node: str | None = None) -> str | None:
    seen = status(cluster, name)
    if seen.get("phase") == "Running" and (node is None or seen.get("node") == node):
        return str(seen["node"])
    return None


def events(cluster: RunningCluster, name: str) -> list[dict[str, Any]]:
    answer = cluster.api("GET", "/api/v1/events", params={"kind": "vm", "name": name})
    return list(answer.json()["items"])


def qemu_io(path: Path, command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["qemu-io", "-f", "qcow2", "-c", command, str(path)],
        capture_output=True,
        text=True,
        timeout=30,
    )


def has_pattern(path: Path, pattern: int) -> bool:
    read = qemu_io(path, f"read -P {pattern:#x} 0 1M")
    return read.returncode == 0 and "Pattern verification failed" not in read.stdout


def info(path: Path) -> dict[str, Any]:
    out = subprocess.run(
        ["qemu-img", "info", "-U", "--output=json", str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return dict(json.loads(out))


def fields(answer: Any) -> list[str]:
    return [c["field"] for c in answer.json()["details"]["causes"]]


def test_the_local_cluster_has_a_shared_pool_every_node_reaches(
    cluster: RunningCluster, shared: Path
) -> None:
    listed = cluster.pvcctl("get", "storagepools")
    assert listed.returncode == 0, listed.stderr
    row = next(line for line in listed.stdout.splitlines() if line.startswith("shared"))
    assert row.split()[:3] == ["shared", "shared", "3/3"]
    for node in cluster.items("nodes"):
        seen = {p["pool"]: p for p in node["status"]["storage"]}
        assert seen["shared"]["reachable"] and seen["shared"]["free"] > 0


def test_bad_input_is_refused_with_the_field_and_nothing_is_written(
    cluster: RunningCluster, shared: Path
) -> None:
    cases = [
        (vm("bad1", [{"name": "d", "pool": "nosuch", "size": "1Gi"}]), "spec.disks[0].pool"),
        (vm("bad2", [{"name": "d", "pool": "shared", "size": "900Ti"}]), "spec.disks[0].size"),
        (pool("bad3", type="rbd", rbd={"pool": "x", "key": "AQ" + "A" * 38}), "spec.rbd.monitors"),
        (pool("bad4", type="shared"), "spec"),
        (pool("bad5", type="local", path="relative/dir"), "spec"),
    ]
    for obj, field in cases:
        answer = cluster.api("POST", "/api/v1/apply", json=[obj])
        assert answer.status_code == 422, answer.text
        assert any(f.startswith(field) for f in fields(answer)), answer.text
        plural = "vms" if obj["kind"] == "VirtualMachine" else "storagepools"
        name = obj["metadata"]["name"]
        assert cluster.api("GET", f"/api/v1/{plural}/{name}").status_code == 404
    too_big = cluster.api("POST", "/api/v1/vms", json=cases[1][0]).json()
    assert "does not fit in pool shared" in json.dumps(too_big)


def test_a_volume_follows_its_vm_through_a_migrate_and_a_failover(
    cluster: RunningCluster, shared: Path
) -> None:
    cluster.apply(cluster_object())
    cluster.apply(vm("follow", [{"name": "data", "pool": "shared", "size": "64Mi"}], "node2"))
    wait_for(lambda: running_on(cluster, "follow", "node2"), 30, "follow to run on node2")
    volume = shared / "follow_data.qcow2"
    seen = status(cluster, "follow")["volumes"]
    assert seen == [
        {
            "disk": "data",
            "pool": "shared",
            "volume": "follow_data.qcow2",
            "size": 64 * MIB,
            "poolType": "shared",
            "createdBy": "node2",
        }
    ]
    written = qemu_io(volume, "write -P 0xab 0 1M")
    assert written.returncode == 0, written.stderr

    moved = cluster.pvcctl("vm", "migrate", "follow", "--to", "node3", "--wait")
    assert moved.returncode == 0, moved.stderr
    assert running_on(cluster, "follow", "node3")
    assert has_pattern(volume, 0xAB)
    assert status(cluster, "follow")["volumes"][0]["createdBy"] == "node2"

    # node3 dies: fenced (its daemon killed), the VM recovered elsewhere with the same bytes.
    cluster.cluster.kill_node("node3")
    wait_for(
        lambda: running_on(cluster, "follow") not in (None, "node3"),
        60,
        "follow to be recovered from node3",
    )
    assert has_pattern(volume, 0xAB)
    assert sorted(p.name for p in shared.iterdir() if p.name.startswith("follow")) == [
        "follow_data.qcow2"
    ], "no other volume was created for it"
    wait_for(
        lambda: all(n["status"]["daemonState"] == "run" for n in cluster.items("nodes")),
        60,
        "node3 to be powered on and run again",
    )


def test_a_clone_starts_from_an_image_and_grows_never_shrinks(
    cluster: RunningCluster, shared: Path
) -> None:
    base = shared / "base-image.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "32M"], check=True)
    assert qemu_io(base, "write -P 0x5a 0 1M").returncode == 0
    cluster.apply(
        vm(
            "cloned",
            [{"name": "root", "pool": "shared", "from": "base-image.qcow2", "size": "48Mi"}],
        )
    )
    wait_for(lambda: running_on(cluster, "cloned"), 30, "cloned to run")
    clone = shared / "cloned_root.qcow2"
    details = info(clone)
    assert details["virtual-size"] == 48 * MIB
    assert details["full-backing-filename"] == str(base)
    assert has_pattern(clone, 0x5A), "the clone starts with the image's bytes"

    current = cluster.api("GET", "/api/v1/vms/cloned").json()
    current["spec"]["disks"][0]["size"] = "96Mi"
    grow = cluster.api("PUT", "/api/v1/vms/cloned", json=current)
    assert grow.status_code == 200, grow.text
    wait_for(
        lambda: (status(cluster, "cloned").get("volumes") or [{}])[0].get("size") == 96 * MIB,
        30,
        "the volume to grow to 96Mi",
    )
    assert info(clone)["virtual-size"] == 96 * MIB
    assert any(e["reason"] == "VolumeResized" for e in events(cluster, "cloned"))

    current = cluster.api("GET", "/api/v1/vms/cloned").json()
    current["spec"]["disks"][0]["size"] = "64Mi"
    shrink = cluster.api("PUT", "/api/v1/vms/cloned", json=current)
    assert shrink.status_code == 422, shrink.text
    assert fields(shrink) == ["spec.disks[0].size"]
    assert "never shrink" in shrink.text
    assert info(clone)["virtual-size"] == 96 * MIB

    # The origin is in use by the clone: deleting the clone's VM with its volumes keeps
    # the image and removes only the clone.
    gone = cluster.pvcctl("delete", "vm", "cloned", "--delete-volumes")
    assert gone.returncode == 0, gone.stderr
    wait_for(lambda: not clone.exists(), 60, "the clone's volume to be deleted")
    assert base.exists()


def test_a_plain_delete_keeps_volumes_and_delete_volumes_deletes_them(
    cluster: RunningCluster, shared: Path
) -> None:
    disks = [{"name": "data", "pool": "shared", "size": "32Mi"}]
    cluster.apply(vm("keep", disks))
    wait_for(lambda: running_on(cluster, "keep"), 30, "keep to run")
    volume = shared / "keep_data.qcow2"
    assert qemu_io(volume, "write -P 0x11 0 1M").returncode == 0

    assert cluster.pvcctl("delete", "vm", "keep", "--wait").returncode == 0
    assert volume.exists(), "a plain delete keeps the volume"
    cluster.apply(vm("keep", disks))
    wait_for(lambda: running_on(cluster, "keep"), 30, "keep to run again")
    assert has_pattern(volume, 0x11), "created again under its name, it gets its volume back"

    gone = cluster.pvcctl("delete", "vm", "keep", "--delete-volumes")
    assert gone.returncode == 0, gone.stderr
    assert "volumes are deleted once its domain is gone" in gone.stdout
    wait_for(lambda: not volume.exists(), 60, "its volume to be deleted")
    reasons = [e["reason"] for e in events(cluster, "keep")]
    assert "VolumeDeleted" in reasons
    wait_for(
        lambda: cluster.api("POST", "/api/v1/apply", json=[vm("keep", disks)]).status_code == 200,
        30,
        "a new keep to be accepted once the old volumes are gone",
    )
    wait_for(lambda: running_on(cluster, "keep"), 30, "the new keep to run")
    assert not has_pattern(volume, 0x11), "the new keep has a new, blank volume"
    assert cluster.pvcctl("delete", "vm", "keep", "--delete-volumes").returncode == 0
    refused = cluster.pvcctl("delete", "storagepool", "shared")
    assert refused.returncode != 0 or not volume.exists()


def test_a_local_volume_binds_its_vm_to_its_node(
    cluster: RunningCluster, shared: Path, tmp_path: Path
) -> None:
    local = tmp_path / "local"
    local.mkdir()
    cluster.apply(pool("local", type="local", path=str(local)))
    cluster.apply(vm("bound", [{"name": "data", "pool": "local", "size": "32Mi"}], "node2"))
    wait_for(lambda: running_on(cluster, "bound", "node2"), 30, "bound to run on node2")
    movable = next(c for c in status(cluster, "bound")["conditions"] if c["type"] == "Movable")
    assert movable["status"] == "False" and movable["reason"] == "LocalVolume"
    assert "local pool local on node2" in movable["message"]

    refused = cluster.api("POST", "/api/v1/vms/bound/migrate", json={"node": "node1"})
    assert refused.status_code == 409, refused.text
    assert "local pool local on node2" in refused.text

    assert cluster.pvcctl("node", "flush", "node2").returncode == 0
    wait_for(
        lambda: any(e["reason"] == "FlushBlocked" for e in events(cluster, "bound")),
        30,
        "a FlushBlocked event",
    )
    holds_for(lambda: running_on(cluster, "bound", "node2") is not None, 3, "bound stays on node2")
    node2 = cluster.api("GET", "/api/v1/nodes/node2").json()["status"]
    assert node2["domainState"] == "flushing", "the flush is held, not completed"
    assert cluster.pvcctl("node", "ready", "node2").returncode == 0

    in_use = cluster.api("DELETE", "/api/v1/storagepools/local")
    assert in_use.status_code == 409 and "bound" in in_use.text


def test_a_vm_bound_to_a_dead_node_is_reported_not_recovered(
    cluster: RunningCluster, shared: Path, tmp_path: Path
) -> None:
    cluster.apply(cluster_object())
    local = tmp_path / "local2"
    local.mkdir()
    cluster.apply(pool("local2", type="local", path=str(local)))
    cluster.apply(vm("stuck", [{"name": "data", "pool": "local2", "size": "32Mi"}], "node3"))
    wait_for(lambda: running_on(cluster, "stuck", "node3"), 30, "stuck to run on node3")

    cluster.cluster.kill_node("node3")
    wait_for(
        lambda: any(e["reason"] == "NotRecovered" for e in events(cluster, "stuck")),
        60,
        "a NotRecovered event",
    )
    told = next(e for e in events(cluster, "stuck") if e["reason"] == "NotRecovered")
    assert "local pool local2 on node3" in told["message"]

    seen_elsewhere: list[str] = []

    def back_on_node3() -> bool:
        # Looked at on every poll: the VM must run nowhere else, nor be placed elsewhere.
        seen_elsewhere.extend(
            n["metadata"]["name"]
            for n in cluster.items("nodes")
            if n["metadata"]["name"] != "node3" and "stuck" in n["status"].get("domains", [])
        )
        placement = cluster.api("GET", "/api/v1/vms/stuck").json().get("status") or {}
        if placement.get("node") not in ("node3", None):
            seen_elsewhere.append(f"status on {placement.get('node')}")
        return running_on(cluster, "stuck", "node3") is not None

    # The fence powers node3 on again: the VM starts there, and ran nowhere else meanwhile.
    wait_for(back_on_node3, 90, "stuck to run on node3 again")
    assert not seen_elsewhere, seen_elsewhere
    assert sorted(p.name for p in local.iterdir()) == ["stuck_data.qcow2"]
