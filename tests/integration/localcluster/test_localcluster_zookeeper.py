"""The local cluster's ZooKeeper: every node of a big local cluster gets its session."""

from __future__ import annotations

from kazoo.client import KazooClient

from localcluster.zookeeper import ZooKeeperServer


def test_more_than_sixty_sessions_from_one_address(zookeeper: ZooKeeperServer) -> None:
    # 64 local nodes, their coordinators, pvcapid and the tools all connect from
    # 127.0.0.1; ZooKeeper's default (maxClientCnxns=60) dropped the 61st at once.
    clients = [KazooClient(hosts=zookeeper.hosts, timeout=10.0) for _ in range(75)]
    try:
        for client in clients:
            client.start(timeout=15)
        assert all(c.connected for c in clients)
        assert clients[-1].get_children("/") is not None
    finally:
        for client in clients:
            client.stop()
            client.close()
