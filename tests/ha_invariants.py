"""Invariants checked all through an HA scenario: never one VM running on two live nodes at
once, never two primaries with one epoch. Import ``Invariants`` and use it as a context
manager around the scenario."""

from __future__ import annotations

import os
import threading
from datetime import UTC, datetime
from pathlib import Path

from localcluster.process import pid_alive
from tests.localcluster_fixture import RunningCluster


class Invariants:
    """Polls the cluster while a scenario runs: never one VM on two live nodes at once."""

    def __init__(self, cluster: RunningCluster) -> None:
        self.cluster = cluster
        self.violations: list[str] = []
        self.primaries: list[tuple[str, int]] = []
        self.checks = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Invariants:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(10)
        assert self.violations == [], self.violations[:10]
        assert self.checks > 0, "the invariant checker never got an answer from the API"

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            try:
                nodes = self.cluster.items("nodes")
                cluster = self.cluster.api("GET", "/api/v1/clusters/cluster").json()
            except Exception:
                continue
            pids = self.cluster.cluster.load_state()
            seen: dict[str, list[str]] = {}
            for node in nodes:
                name = node["metadata"]["name"]
                pid = pids.nodes.get(name, 0) if pids else 0
                if not pid or not pid_alive(pid):
                    continue  # a powered-off host runs nothing
                status = node.get("status") or {}
                if not heartbeat_from_process(status.get("lastHeartbeat"), pid):
                    continue  # written by the process before a power cycle: it runs nothing now
                for domain in status.get("domains", []):
                    seen.setdefault(domain, []).append(name)
            self.checks += 1
            for domain, where in seen.items():
                if len(where) > 1:
                    self.violations.append(f"{domain} running on {where}")
            # No Cluster object yet: the API answers 404 with a Status body.
            status = cluster.get("status") if cluster.get("kind") == "Cluster" else None
            if isinstance(status, dict) and status.get("primary"):
                entry = (status["primary"], status.get("epoch", 0))
                if not self.primaries or self.primaries[-1] != entry:
                    if any(e == entry[1] and p != entry[0] for p, e in self.primaries):
                        self.violations.append(f"two primaries with epoch {entry[1]}")
                    self.primaries.append(entry)


def heartbeat_from_process(heartbeat: str | None, pid: int) -> bool:
    """Whether a heartbeat was written after process ``pid`` started (the test driver's
    domains live in the daemon's process, so an older report describes a dead process)."""
    if not heartbeat:
        return False
    try:
        start_ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
        boot = next(
            int(line.split()[1])
            for line in Path("/proc/stat").read_text().splitlines()
            if line.startswith("btime ")
        )
    except (OSError, ValueError, IndexError, StopIteration):
        return True  # cannot tell: count it, erring towards reporting a duplicate
    started = boot + start_ticks / os.sysconf("SC_CLK_TCK")
    written = datetime.strptime(heartbeat, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    return written.timestamp() >= started - 1.0  # starttime has 10 ms ticks; allow slack
