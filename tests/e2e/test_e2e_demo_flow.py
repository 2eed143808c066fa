"""What `make demo` does, through the real pvcctl binary against a real local cluster."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import wait_for
from tests.localcluster_fixture import RunningCluster, start_cluster

MANIFESTS = Path(__file__).resolve().parents[2] / "manifests"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCluster]:
    yield from start_cluster(tmp_path_factory.mktemp("demo"))


@pytest.fixture(scope="module")
def applied(cluster: RunningCluster) -> RunningCluster:
    result = cluster.pvcctl("apply", "-f", str(MANIFESTS))
    assert result.returncode == 0, result.stderr
    waited = cluster.pvcctl("wait", "vm", "--all", "--for=condition=Ready", "--timeout=60s")
    assert waited.returncode == 0, waited.stderr
    return cluster


def test_manifest_vms_run_on_nodes_their_limits_allow(applied: RunningCluster) -> None:
    vms = {v["metadata"]["name"]: v for v in applied.items("vms")}
    assert set(vms) == {"web1", "web2", "db1"}
    for vm in vms.values():
        assert vm["status"]["phase"] == "Running"
        allowed = vm["spec"]["placement"]["nodes"]
        assert not allowed or vm["status"]["node"] in allowed
    assert vms["db1"]["status"]["node"] == "node3"  # its home node, which has room


def test_each_vm_runs_on_exactly_the_node_its_status_names(applied: RunningCluster) -> None:
    def domains_match() -> bool:
        nodes = applied.items("nodes")
        running = [d for n in nodes for d in n["status"]["domains"]]
        where = {d: n["metadata"]["name"] for n in nodes for d in n["status"]["domains"]}
        vms = {v["metadata"]["name"]: v["status"]["node"] for v in applied.items("vms")}
        return sorted(running) == sorted(vms) and where == vms

    wait_for(domains_match, 20, "node heartbeats to report each VM's domain on its node")


def test_get_nodes_and_vms_tables(applied: RunningCluster) -> None:
    nodes = applied.pvcctl("get", "nodes")
    assert nodes.returncode == 0
    lines = nodes.stdout.splitlines()
    assert lines[0].split()[:2] == ["NAME", "STATUS"]
    assert [line.split()[1] for line in lines[1:]] == ["Ready"] * 3
    vms = applied.pvcctl("get", "vms")
    assert sorted(line.split()[1] for line in vms.stdout.splitlines()[1:]) == ["Running"] * 3


def test_applying_the_same_manifests_again_changes_nothing(applied: RunningCluster) -> None:
    before = applied.get_json("vm", "web1")["metadata"]
    result = applied.pvcctl("apply", "-f", str(MANIFESTS))
    assert result.returncode == 0, result.stderr
    assert all(line.endswith(" unchanged") for line in result.stdout.splitlines())
    after = applied.get_json("vm", "web1")["metadata"]
    assert (after["generation"], after["resourceVersion"]) == (
        before["generation"],
        before["resourceVersion"],
    )


def test_stale_resource_version_is_a_conflict(applied: RunningCluster, tmp_path: Path) -> None:
    vm = applied.get_json("vm", "web2")
    stale = vm["metadata"]["resourceVersion"]
    vm.pop("status")
    vm["spec"]["vcpus"] = 2
    assert applied.api("PUT", "/api/v1/vms/web2", json=vm).status_code == 200
    vm["spec"]["vcpus"] = 3  # a second writer still holding the old resourceVersion
    vm["metadata"]["resourceVersion"] = stale
    response = applied.api("PUT", "/api/v1/vms/web2", json=vm)
    assert response.status_code == 409
    assert response.json()["reason"] == "Conflict"
    manifest = tmp_path / "web2.json"
    manifest.write_text(json.dumps(vm))
    result = applied.pvcctl("apply", "-f", str(manifest))
    assert result.returncode == 1
    assert "stale" in result.stderr and "Traceback" not in result.stderr
    assert applied.get_json("vm", "web2")["spec"]["vcpus"] == 2


VALID = """apiVersion: pvc/v1
kind: VirtualMachine
metadata:
  name: should-not-exist
spec:
  memory: 64Mi
---
"""

BAD = {
    "bad-yaml": ("apiVersion: pvc/v1\nkind: VirtualMachine\nmetadata: {name: x\n", 10, "YAML"),
    "unknown-kind": ("apiVersion: pvc/v1\nkind: Pod\nmetadata: {name: x}\n", 9, "unknown kind"),
    "unknown-field": (
        "apiVersion: pvc/v1\nkind: VirtualMachine\nmetadata: {name: x}\nspec:\n"
        "  memory: 1Gi\n  cpus: 2\n",
        13,
        "spec.cpus: unknown field",
    ),
    "negative-memory": (
        "apiVersion: pvc/v1\nkind: VirtualMachine\nmetadata: {name: x}\nspec:\n  memory: -1Gi\n",
        12,
        "spec.memory",
    ),
    "bad-name": (
        "apiVersion: pvc/v1\nkind: VirtualMachine\nmetadata:\n  name: Web_1\nspec:\n"
        "  memory: 1Gi\n",
        11,
        "metadata.name",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_malformed_manifest_exits_2_names_the_place_and_writes_nothing(
    applied: RunningCluster, tmp_path: Path, case: str
) -> None:
    text, line, words = BAD[case]
    manifest = tmp_path / f"{case}.yaml"
    manifest.write_text(VALID + text)
    result = applied.pvcctl("apply", "-f", str(manifest))
    assert result.returncode == 2
    message = result.stderr.strip()
    assert len(message.splitlines()) == 1, message
    assert f"{manifest}:{line}" in message and words in message, message
    assert "should-not-exist" not in {v["metadata"]["name"] for v in applied.items("vms")}


def test_unreachable_server_is_exit_1_with_a_message(applied: RunningCluster) -> None:
    result = applied.pvcctl("--server", "http://127.0.0.1:9", "get", "vms")
    assert result.returncode == 1
    assert "cannot reach the PVC API" in result.stderr and "Traceback" not in result.stderr


def test_unknown_kind_on_the_command_line_is_exit_2(applied: RunningCluster) -> None:
    result = applied.pvcctl("get", "pods")
    assert result.returncode == 2
    assert "unknown kind 'pods'" in result.stderr
