"""The HA benchmarks' shared helpers (bench/failover.py, switchover.py, soak.py, flush.py,
migration.py...): a fresh local cluster per run, the few API calls they make, polling with a
deadline, the environment and JSON results."""

from __future__ import annotations

import json
import math
import os
import platform
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from benchlib import git, nan_to_none, nproc

NODES = 3
VM_MEMORY = "128Mi"


def secs(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.2f} s"


def seconds_of(duration: str) -> float:
    """'1s', '500ms', '2m' → seconds (the forms the Cluster spec uses here)."""
    match = re.fullmatch(r"([0-9.]+)(ms|s|m|h)", duration.strip())
    if not match:
        raise ValueError(f"not a duration: {duration!r}")
    scale = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}[match.group(2)]
    return float(match.group(1)) * scale


def environment() -> dict[str, Any]:
    status = git("status", "--porcelain")
    return {
        "machine": {
            "nproc": nproc(),
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "python": sys.version.split()[0],
            "loadavg_at_end": list(os.getloadavg()),
        },
        "git": {
            "commit": git("rev-parse", "HEAD"),
            "dirty": None if status is None else bool(status),
        },
    }


def write_json(out: Path, result: dict[str, Any]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(nan_to_none(result), indent=2) + "\n")


def rfc3339(value: str) -> float:
    """A status timestamp ('2024-05-01T10:00:00.123456Z') as Unix time."""
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def cluster_object(fencing: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "pvc/v1",
        "kind": "Cluster",
        "metadata": {"name": "cluster"},
        "spec": {"fencing": fencing, **spec},
    }


def vm_object(name: str, home: str | None = None, memory: str = VM_MEMORY) -> dict[str, Any]:
    spec: dict[str, Any] = {"memory": memory, "vcpus": 1}
    if home:
        spec["placement"] = {"home": home}
    return {
        "apiVersion": "pvc/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": name, "labels": {"pvc-bench": "ha"}},
        "spec": spec,
    }


class Api:
    """The few API calls the HA benchmarks make."""

    def __init__(self, server: str) -> None:
        self.client = httpx.Client(base_url=server, timeout=10.0)

    def close(self) -> None:
        self.client.close()

    def apply(self, *objects: dict[str, Any]) -> None:
        response = self.client.post("/api/v1/apply", json=list(objects))
        if response.status_code != 200:
            raise RuntimeError(f"apply failed: {response.status_code} {response.text[:500]}")

    def items(self, plural: str) -> list[dict[str, Any]]:
        response = self.client.get(f"/api/v1/{plural}")
        response.raise_for_status()
        return list(response.json()["items"])

    def cluster_status(self) -> dict[str, Any]:
        response = self.client.get("/api/v1/clusters/cluster")
        if response.status_code == 404:
            return {}
        response.raise_for_status()
        return dict(response.json().get("status") or {})

    def nodes(self) -> dict[str, dict[str, Any]]:
        return {n["metadata"]["name"]: (n.get("status") or {}) for n in self.items("nodes")}

    def vms(self) -> dict[str, dict[str, Any]]:
        return {v["metadata"]["name"]: (v.get("status") or {}) for v in self.items("vms")}


def condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions", []) if c.get("type") == type_), {})


def wait(check: Any, timeout: float, what: str, interval: float = 0.05) -> Any:
    """Poll ``check`` until it returns something truthy (errors count as not yet)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    error: Exception | None = None
    while True:
        try:
            last = check()
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            last = None
            error = exc
        else:
            error = None
        if last:
            return last
        if time.monotonic() >= deadline:
            raise TimeoutError(
                f"timed out after {timeout:g}s waiting for {what} (last error {error!r})"
            )
        time.sleep(interval)


def settled_primary(api: Api, timeout: float = 60.0) -> tuple[str, int]:
    """Wait for one primary named in the Cluster status whose node says primary, rest secondary."""

    def one() -> tuple[str, int] | None:
        status = api.cluster_status()
        name, epoch = status.get("primary"), status.get("epoch")
        states = {n: s.get("routerState") for n, s in api.nodes().items()}
        others = {s for n, s in states.items() if n != name}
        if name and epoch and states.get(name) == "primary" and others == {"secondary"}:
            return str(name), int(epoch)
        return None

    result: tuple[str, int] = wait(one, timeout, "exactly one primary, the rest secondary")
    return result


@dataclass
class LocalRun:
    cluster: Any  # localcluster.LocalCluster
    state: Any  # localcluster.LocalState
    server: str
    dir: Path

    def pid(self, node: str) -> int:
        state = self.cluster.load_state()
        return int(state.nodes[node])


@contextmanager
def local_cluster(
    label: str,
    session_timeout: str,
    keep_state: bool,
    nodes: int = NODES,
    node_networks: dict[str, dict[str, object]] | None = None,
) -> Iterator[LocalRun]:
    """A fresh LocalCluster in a temporary dir on a free API port, always stopped after.
    The dir (daemon logs) is removed after a clean run, kept after a failed one."""
    from localcluster.cluster import LocalCluster

    state_dir = Path(tempfile.mkdtemp(prefix=f"pvc-bench-{label}-"))
    cluster = LocalCluster(
        state_dir,
        nodes=nodes,
        api_port=0,
        node_memory="8Gi",
        session_timeout=session_timeout,
        node_networks=node_networks,
    )
    failed = True
    started = time.monotonic()
    try:
        state, _ = cluster.up(timeout=120)
        print(f"  local cluster up in {time.monotonic() - started:.1f} s ({state_dir})")
        yield LocalRun(cluster, state, LocalCluster.server_url(state), state_dir)
        failed = False
    finally:
        cluster.down()
        if keep_state or failed:
            print(f"  state dir (logs) kept at {state_dir}")
        else:
            shutil.rmtree(state_dir, ignore_errors=True)


class LeaseGone:
    """Watches a node's lease (an ephemeral znode of its daemon's ZooKeeper session) from a
    client of our own and records the time.monotonic() at which it was deleted: for a
    SIGKILLed daemon that is when ZooKeeper expired its session."""

    def __init__(self, run: LocalRun, node: str) -> None:
        from kazoo.client import KazooClient
        from kazoo.recipe.watchers import DataWatch

        self.at: float | None = None
        self._existed = False
        from localcluster.zkauth import admin_auth_data

        self.client = KazooClient(
            hosts=f"127.0.0.1:{run.state.zookeeper_port}",
            timeout=10.0,
            auth_data=admin_auth_data(run.cluster.dir),
        )
        self.client.start(timeout=15)
        DataWatch(self.client, f"{run.state.root}/leases/nodes/{node}", self._changed)

    def _changed(self, data: bytes | None, _stat: object) -> bool:
        if data is not None:
            self._existed = True
            return True
        if self._existed and self.at is None:
            self.at = time.monotonic()
        return False

    def close(self) -> None:
        self.client.stop()
        self.client.close()
