"""Run a whole cluster on one machine: `pvcctl local` (the demo), the tests and the benches.

Names load on first use, so the power switch (localcluster.power, a fence
agent on the failover path) starts without importing httpx and friends.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from localcluster.cluster import (
        LocalCluster,
        LocalClusterError,
        LocalState,
        default_state_dir,
    )
    from localcluster.zookeeper import ZooKeeperServer

_WHERE = {
    "LocalCluster": "localcluster.cluster",
    "LocalClusterError": "localcluster.cluster",
    "LocalState": "localcluster.cluster",
    "default_state_dir": "localcluster.cluster",
    "ZooKeeperServer": "localcluster.zookeeper",
}

__all__ = [
    "LocalCluster",
    "LocalClusterError",
    "LocalState",
    "ZooKeeperServer",
    "default_state_dir",
]


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(name)
