"""The chaos cluster's fast timings: the daemons' config and the Cluster object's fencing."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ChaosTimings:
    """Fast timings for every trial: the daemons' config and the Cluster object's fencing."""

    session_timeout: float = 4.0
    keepalive_interval: float = 1.0
    fence_intervals: int = 3
    saving_throws: int = 3
    self_fence_after: float = 3.0
    resync_period: float = 5.0
    crash_loop_base: float = 1.0
    crash_loop_cap: float = 4.0
    converge_bound: float = 60.0
    """Once every fault is healed, every VM that should run runs within this many seconds:
    a node fenced right after the heal (session + saving throws, ~7 s), its reboot and
    registration (up to session + 5 s waiting for its old lease), a shutdown move of a guest
    that ignores ACPI (shutdownTimeout up to 4 s) and crash-loop back-off (cap 4 s), with room
    for a loaded machine."""

    @property
    def fence_after(self) -> float:
        """Silence after which the primary fences a node (heartbeat window + saving throws)."""
        return self.keepalive_interval * (self.fence_intervals + self.saving_throws)

    def cluster_object(self) -> dict[str, Any]:
        return {
            "apiVersion": "pvc/v1",
            "kind": "Cluster",
            "metadata": {"name": "cluster"},
            "spec": {
                "fencing": {
                    "keepaliveInterval": f"{self.keepalive_interval:g}s",
                    "fenceIntervals": self.fence_intervals,
                    "savingThrows": self.saving_throws,
                    "selfFenceAfter": f"{self.self_fence_after:g}s",
                }
            },
        }
