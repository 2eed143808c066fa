"""Shared fixtures: one real ZooKeeper server per test session, a fresh store root per test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from localcluster.zookeeper import ZooKeeperServer
from tests.ceph import ceph  # noqa: F401 (one session Ceph for all modules that use it)
from zkstore import Store

# Modules that use what the whole host shares: the system libvirtd (started and stopped by
# one worker's session), network namespaces and IPMI ports, real QEMU guests whose timing
# the tests measure. With pytest-xdist (`make test`) they run one after another on one
# worker; every other module runs whole on one worker, in parallel with them.
HOST_WIDE = (
    "tests/e2e/",
    "tests/integration/hypervisor/test_libvirt_kvm.py",
    "tests/integration/hypervisor/test_hostnet_netlink.py",
    "tests/integration/hypervisor/test_hostnet_garp.py",
    "tests/integration/ha/test_ha_handover.py",
)


def pytest_itemcollected(item: pytest.Item) -> None:
    """Group tests for ``--dist loadgroup``: by module (module fixtures are set up once, and
    a module's tests keep their order), host-wide modules all in one group. Marked as each
    test is collected, before pytest-xdist reads the marks."""
    module = item.nodeid.split("::")[0]
    group = "host-wide" if module.startswith(HOST_WIDE) else module
    item.add_marker(pytest.mark.xdist_group(group))


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
