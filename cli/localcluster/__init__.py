"""Run a whole cluster on one machine, for the demo and the tests.

Names load on first use, so the power switch (cli.localcluster.power, a fence
agent on the failover path) starts without importing httpx and friends.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cli.localcluster.cluster import (
        LocalCluster,
        LocalClusterError,
        LocalState,
        default_state_dir,
    )
    from cli.localcluster.zookeeper import ZooKeeperServer

_WHERE = {
    "LocalCluster": "cli.localcluster.cluster",
    "LocalClusterError": "cli.localcluster.cluster",
    "LocalState": "cli.localcluster.cluster",
    "default_state_dir": "cli.localcluster.cluster",
    "ZooKeeperServer": "cli.localcluster.zookeeper",
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
