"""Shared fixtures: one real ZooKeeper server per test session, a fresh store root per test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from cli.localcluster.zookeeper import ZooKeeperServer
from zkstore import Store


@pytest.fixture(scope="session")
def zookeeper(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ZooKeeperServer]:
    server = ZooKeeperServer(tmp_path_factory.mktemp("zookeeper"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def zk_root() -> str:
    """Each test gets its own root, so tests share one server but no state."""
    return f"/test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def store(zookeeper: ZooKeeperServer, zk_root: str) -> Iterator[Store]:
    the_store = Store(zookeeper.hosts, zk_root, timeout=6.0)
    the_store.start()
    yield the_store
    the_store.stop()


@pytest.fixture
def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent
