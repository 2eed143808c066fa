"""A whole local cluster (real ZooKeeper, real pvcnoded and pvcapid processes) for a test module."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from kazoo.client import KazooClient

from localcluster import LocalCluster, LocalState
from localcluster.process import processes_naming
from localcluster.zkauth import admin_auth_data
from tests.helpers import wait_for

PVCCTL = str(Path(sys.executable).parent / "pvcctl")


@dataclass
class RunningCluster:
    cluster: LocalCluster
    state: LocalState

    @property
    def server(self) -> str:
        return LocalCluster.server_url(self.state)

    def pvcctl(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "PVC_SERVER": self.server}
        return subprocess.run(
            [PVCCTL, *args], input=stdin, capture_output=True, text=True, env=env, timeout=120
        )

    def node_metrics(self, node: str) -> str:
        """A scrape of ``node``'s pvcnoded metrics endpoint (Prometheus text format)."""
        response = httpx.get(LocalCluster.metrics_url(self.state, node), timeout=10)
        response.raise_for_status()
        return response.text

    def zk_client(self, timeout: float = 10.0) -> KazooClient:
        """A started kazoo client on the cluster's ZooKeeper with the admin identity (the
        store runs with ACLs on: an anonymous client may read nothing under the root);
        the caller stops and closes it."""
        client = KazooClient(
            hosts=self.state.zookeeper_hosts,
            timeout=timeout,
            auth_data=admin_auth_data(self.cluster.dir),
        )
        client.start(timeout=15)
        return client

    def api(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.request(method, f"{self.server}{path}", timeout=10, **kwargs)

    def apply(self, *objects: dict[str, Any]) -> None:
        """Apply manifests through the API; anything but 200 fails the test."""
        response = self.api("POST", "/api/v1/apply", json=list(objects))
        assert response.status_code == 200, response.text

    def items(self, plural: str) -> list[dict[str, Any]]:
        response = self.api("GET", f"/api/v1/{plural}")
        response.raise_for_status()
        return list(response.json()["items"])

    def wait_pool_reached(self, pool: str, nodes: int, timeout: float = 60) -> None:
        """Wait until ``nodes`` nodes reach StoragePool ``pool`` (its status, from the
        primary); a VM applied before may go to whichever node reported it first."""

        def reached() -> bool:
            status = self.api("GET", f"/api/v1/storagepools/{pool}").json().get("status") or {}
            return sum(1 for n in status.get("nodes") or [] if n["reachable"]) == nodes

        wait_for(reached, timeout, f"{nodes} nodes to reach pool {pool}")

    def get_json(self, kind: str, name: str) -> dict[str, Any]:
        result = self.pvcctl("get", kind, name, "-o", "json")
        assert result.returncode == 0, result.stderr
        return dict(json.loads(result.stdout))


def start_cluster(
    state_dir: Path,
    nodes: int = 3,
    session_timeout: str = "6s",
    libvirt_uris: dict[str, str] | None = None,
    disk_dir: Path | None = None,
    zookeeper_members: int = 1,
    node_networks: dict[str, dict[str, object]] | None = None,
    node_config: dict[str, dict[str, object]] | None = None,
    coordinators: int | None = None,
    nodes_per_process: int = 1,
) -> Iterator[RunningCluster]:
    cluster = LocalCluster(
        state_dir,
        nodes=nodes,
        api_port=0,
        node_memory="8Gi",
        session_timeout=session_timeout,
        libvirt_uris=libvirt_uris,
        disk_dir=disk_dir,
        zookeeper_members=zookeeper_members,
        node_networks=node_networks,
        node_config=node_config,
        coordinators=coordinators,
        nodes_per_process=nodes_per_process,
    )
    try:
        state, _ = cluster.up(timeout=90)
    except Exception as exc:
        logs = "\n".join(
            f"--- {p.name}\n{p.read_text()[-2000:]}" for p in sorted(state_dir.glob("*.log"))
        )
        cluster.down()
        pytest.fail(f"local cluster did not start: {exc}\n{logs}")
    try:
        yield RunningCluster(cluster, state)
    finally:
        cluster.down()
        left = processes_naming(cluster.dir)
        assert not left, f"still running after local down: {left}"
