"""A VM's story, told by real pvcnoded processes (libvirt's test driver) through the API:
its Converged and RestartRequired conditions, its events with the node, its console log and
domain XML, and each node's daemonVersion."""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from schemas.version import pvc_version
from tests.helpers import vm_manifest, wait_for
from tests.localcluster_fixture import PVCCTL, RunningCluster, start_cluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCluster]:
    yield from start_cluster(tmp_path_factory.mktemp("story"), nodes=2)


def vm_object(cluster: RunningCluster, name: str) -> dict[str, Any]:
    response = cluster.api("GET", f"/api/v1/vms/{name}")
    assert response.status_code == 200, response.text
    return dict(response.json())


def condition(cluster: RunningCluster, name: str, kind: str) -> dict[str, Any]:
    """The VM's condition ``kind`` as stored now, or {} (with the generations it is for)."""
    vm = vm_object(cluster, name)
    status = vm.get("status") or {}
    if status.get("observedGeneration") != vm["metadata"]["generation"]:
        return {}
    return next((c for c in status.get("conditions", []) if c["type"] == kind), {})


def converged(cluster: RunningCluster, name: str) -> bool:
    return condition(cluster, name, "Converged").get("status") == "True"


def domains(cluster: RunningCluster) -> dict[str, list[str]]:
    return {n["metadata"]["name"]: n["status"]["domains"] for n in cluster.items("nodes")}


def test_every_node_reports_its_daemon_version(cluster: RunningCluster) -> None:
    nodes = wait_for(
        lambda: [n for n in cluster.items("nodes") if (n.get("status") or {}).get("daemonVersion")],
        20,
        "nodes reporting daemonVersion",
    )
    assert {n["status"]["daemonVersion"] for n in nodes} == {pvc_version()}
    assert pvc_version() not in ("", "unknown")


def test_converged_and_restart_required_follow_the_spec(cluster: RunningCluster) -> None:
    cluster.apply(vm_manifest("cv", home="node1"))
    wait_for(lambda: converged(cluster, "cv"), 30, "cv Converged")
    # The node lists its domains in its heartbeat, which follows a start within 0.25 s.
    wait_for(lambda: "cv" in domains(cluster)["node1"], 5, "node1's heartbeat to list cv")
    assert condition(cluster, "cv", "RestartRequired")["status"] == "False"

    cluster.apply(vm_manifest("cv", home="node1", memory="128Mi", vcpus=2))
    pending = wait_for(
        lambda: (c := condition(cluster, "cv", "RestartRequired")).get("status") == "True" and c,
        20,
        "RestartRequired after a memory change",
    )
    assert pending["reason"] == "PendingChanges"
    assert pending["message"].startswith("memory, vcpus changed since it started")
    assert converged(cluster, "cv")  # it runs where placed; the change waits for a reboot

    assert cluster.pvcctl("vm", "restart", "cv").returncode == 0
    wait_for(
        lambda: condition(cluster, "cv", "RestartRequired").get("status") == "False",
        30,
        "RestartRequired cleared by the restart",
    )
    wait_for(lambda: converged(cluster, "cv"), 30, "cv Converged after the restart")


def test_halted_vm_is_converged_once_stopped(cluster: RunningCluster) -> None:
    # Never placed: the primary's record of it says converged.
    cluster.apply(vm_manifest("hv", home="node1", runStrategy="Halted"))
    wait_for(lambda: converged(cluster, "hv"), 20, "a new Halted VM Converged")
    assert all("hv" not in names for names in domains(cluster).values())

    # Running, then Halted: converged only once its domain is off.
    cluster.apply(vm_manifest("hv2", home="node2"))
    wait_for(lambda: converged(cluster, "hv2"), 30, "hv2 running")
    cluster.apply(vm_manifest("hv2", home="node2", runStrategy="Halted", shutdownTimeout="2s"))
    wait_for(lambda: converged(cluster, "hv2"), 30, "hv2 Converged as stopped")
    assert vm_object(cluster, "hv2")["status"]["phase"] == "Stopped"
    wait_for(lambda: "hv2" not in domains(cluster)["node2"], 10, "hv2 gone from node2's domains")


def vm_events(cluster: RunningCluster, name: str) -> list[tuple[str, str, str]]:
    """(reason, source, message) of the VM's events, oldest first."""
    response = cluster.api("GET", "/api/v1/events", params={"kind": "vm", "name": name})
    assert response.status_code == 200, response.text
    return [(e["reason"], e["source"], e["message"]) for e in response.json()["items"]]


def reasons(cluster: RunningCluster, name: str) -> list[str]:
    return [reason for reason, _, _ in vm_events(cluster, name)]


def test_events_tell_where_it_started_moved_and_stopped(cluster: RunningCluster) -> None:
    cluster.apply(vm_manifest("ev", home="node1", shutdownTimeout="5s"))
    wait_for(lambda: "Started" in reasons(cluster, "ev"), 30, "a Started event")
    started = [e for e in vm_events(cluster, "ev") if e[0] == "Started"]
    assert started[0][1] == "node1"
    assert started[0][2].startswith("started on node1")

    # The test driver cannot live-migrate: auto moves it with a shutdown.
    assert cluster.pvcctl("vm", "migrate", "ev", "--to", "node2").returncode == 0
    wait_for(
        lambda: [e for e in vm_events(cluster, "ev") if e[:2] == ("Started", "node2")],
        30,
        "a Started event from node2",
    )
    story = vm_events(cluster, "ev")
    removed = [e for e in story if e[0] == "DomainRemoved"]
    assert removed and removed[0][1] == "node1"
    assert removed[0][2] == "its domain is removed from node1: placed on node2"
    order = [r for r in reasons(cluster, "ev") if r in ("MigrateRequested", "DomainRemoved")]
    assert order == ["MigrateRequested", "DomainRemoved"]

    assert cluster.pvcctl("vm", "stop", "ev").returncode == 0
    wait_for(
        lambda: [e for e in vm_events(cluster, "ev") if e[:2] == ("Stopped", "node2")],
        30,
        "a Stopped event from node2",
    )
    assert "ForcedOff" not in reasons(cluster, "ev")


def console(cluster: RunningCluster, name: str, **params: Any) -> str:
    response = cluster.api("GET", f"/api/v1/vms/{name}/console", params=params)
    assert response.status_code == 200, response.text
    return response.text


def test_console_log_and_domain_xml_through_the_store(cluster: RunningCluster) -> None:
    assert cluster.api("GET", "/api/v1/vms/nope/console").status_code == 404
    assert cluster.api("GET", "/api/v1/vms/nope/domainxml").status_code == 404
    cluster.apply(vm_manifest("con", home="node1"))
    first = "[pvc test console] con boot 1 "
    wait_for(lambda: first in console(cluster, "con"), 30, "the first boot's console line")

    follower = subprocess.Popen(
        [PVCCTL, "vm", "logs", "con", "-f"],
        env={**os.environ, "PVC_SERVER": cluster.server},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    printed: list[str] = []
    reader = threading.Thread(
        target=lambda: printed.extend(line.decode() for line in follower.stdout or ()),
        daemon=True,
    )
    reader.start()
    try:
        assert cluster.pvcctl("vm", "restart", "con").returncode == 0
        wait_for(lambda: "boot 2 " in console(cluster, "con"), 30, "the second boot's line")
        result = cluster.pvcctl("vm", "logs", "con", "--tail", "1")
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("[pvc test console] con boot 2 ")
        assert result.stdout.count("\n") == 1
        # -f looks again each second: wait (bounded) until it printed the second line.
        wait_for(lambda: any("boot 2 " in line for line in printed), 15, "-f to print it")
    finally:
        follower.terminate()
        follower.wait(timeout=10)
        reader.join(timeout=10)
    # What -f printed: the first line, then the second once it came, each once.
    out = "".join(printed)
    assert out.count("boot 1 ") == 1
    assert out.count("boot 2 ") == 1

    xml = cluster.pvcctl("vm", "dumpxml", "con")
    assert xml.returncode == 0, xml.stderr
    assert "<name>con</name>" in xml.stdout
    assert cluster.api("GET", "/api/v1/vms/con/console", params={"tail": -1}).status_code == 422

    # Deleted: both go with it.
    assert cluster.api("DELETE", "/api/v1/vms/con").status_code == 200
    client = cluster.zk_client()
    try:
        root = cluster.state.root
        wait_for(
            lambda: (
                not client.exists(f"{root}/consoles/con")
                and not client.exists(f"{root}/domainxml/con")
            ),
            30,
            "the console and XML of the deleted VM removed",
        )
    finally:
        client.stop()
        client.close()
    bad = cluster.pvcctl("vm", "logs", "con")
    assert bad.returncode != 0 and "Traceback" not in bad.stderr
