"""The Cluster object the HA tests apply: short timings through the spec (keepalive 1 s,
3 missed intervals, 3 saving throws), never by patching code."""

from __future__ import annotations

from typing import Any

FAST = {"keepaliveInterval": "1s", "fenceIntervals": 3, "savingThrows": 3}


def cluster_object(**spec: Any) -> dict[str, Any]:
    """The Cluster with fast fencing and ``spec`` on top."""
    return {
        "apiVersion": "pvc/v1",
        "kind": "Cluster",
        "metadata": {"name": "cluster"},
        "spec": {"fencing": FAST, **spec},
    }
