"""Run a whole cluster on one machine, for the demo and the tests."""

from cli.localcluster.cluster import LocalCluster, LocalClusterError, LocalState, default_state_dir
from cli.localcluster.zookeeper import ZooKeeperServer

__all__ = [
    "LocalCluster",
    "LocalClusterError",
    "LocalState",
    "ZooKeeperServer",
    "default_state_dir",
]
