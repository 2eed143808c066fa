"""The schema version and its migrations against a real ZooKeeper: a new store is at the
code's version; two daemons racing run a migration once (the other waits on the lock); a
daemon older than the store refuses to start (a real pvcapid process, exit 1)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
import yaml
from kazoo.client import KazooClient

from localcluster.zookeeper import ZooKeeperServer
from zkstore import SchemaTooNew, Store
from zkstore.codec import encode
from zkstore.migrations import CODE_VERSION, Migration, ensure_schema, read_version


def test_a_new_store_is_at_the_code_version(store: Store) -> None:
    assert read_version(store.client, store.root)[0] == CODE_VERSION == 1
    # Started again (a daemon restart): nothing to do, nothing changes.
    before = store.client.get(store.path("/schema"))[1].mzxid
    assert ensure_schema(store.client, store.root) == CODE_VERSION
    assert store.client.get(store.path("/schema"))[1].mzxid == before


def test_racing_migrators_run_each_step_once(zookeeper: ZooKeeperServer, zk_root: str) -> None:
    runs: list[str] = []

    def slow_step(client: KazooClient, root: str) -> None:
        runs.append(threading.current_thread().name)
        client.ensure_path(f"{root}/migrated-data")
        time.sleep(0.3)  # long enough that the other daemon arrives while it runs

    steps = (
        Migration(1, "create the schema version znode", lambda _c, _r: None),
        Migration(2, "a step that must run once", slow_step),
    )
    clients = [KazooClient(hosts=zookeeper.hosts, timeout=6.0) for _ in range(2)]
    results: dict[str, int] = {}
    gate = threading.Barrier(2)

    def daemon(client: KazooClient, name: str) -> None:
        gate.wait()
        results[name] = ensure_schema(client, zk_root, holder=name, migrations=steps)

    try:
        for client in clients:
            client.start(timeout=10)
        threads = [
            threading.Thread(target=daemon, args=(c, f"d{i}"), name=f"d{i}")
            for i, c in enumerate(clients)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
        assert results == {"d0": 2, "d1": 2}
        assert len(runs) == 1, runs
        assert read_version(clients[0], zk_root)[0] == 2
        # Code of version 1 on this store now refuses, with both versions in the error.
        with pytest.raises(SchemaTooNew, match="version 2, newer than this code's 1"):
            ensure_schema(clients[1], zk_root, migrations=steps[:1])
    finally:
        for client in clients:
            client.stop()
            client.close()


def test_an_older_pvcapid_refuses_to_start(
    zookeeper: ZooKeeperServer, tmp_path: Path, zk_root: str
) -> None:
    """A real pvcapid process on a store one version ahead of it: exit 1, a clear error, the
    structured log line, and the store left as it was."""
    client = KazooClient(hosts=zookeeper.hosts, timeout=6.0)
    client.start(timeout=10)
    try:
        newer = CODE_VERSION + 1
        client.create(f"{zk_root}/schema", encode({"version": newer}), makepath=True)
        config = tmp_path / "api.yaml"
        config.write_text(yaml.safe_dump({"zookeeper": zookeeper.hosts, "root": zk_root}))
        result = subprocess.run(
            [sys.executable, "-m", "api.server", "--config", str(config), "--port", "0"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 1, result.stderr
        assert f"event=schema_too_new store={newer} code={CODE_VERSION}" in result.stderr
        assert "pvcapid: the store's schema is version 2, newer than this code's 1" in (
            result.stderr
        )
        assert "Traceback" not in result.stderr
        assert read_version(client, zk_root)[0] == newer
    finally:
        client.stop()
        client.close()


def test_a_store_without_the_version_znode_is_migrated_from_0(
    zookeeper: ZooKeeperServer,
) -> None:
    """A store made before the version znode existed (schema 0): started, it gets one."""
    root = f"/old-{uuid.uuid4().hex[:8]}"
    old = Store(zookeeper.hosts, root, timeout=6.0)
    old.client.start(timeout=10)
    try:
        old.ensure_layout()  # what older code made: everything but /schema
        assert read_version(old.client, root) == (0, -1)

        # Meanwhile a daemon of the code before migrations connects: it writes version 1
        # outside the lock, as it always did. The same version: taken as done.
        def older_daemon_writes_1(client: KazooClient, root: str) -> None:
            client.create(f"{root}/schema", encode({"version": 1}))

        steps = (Migration(1, "create the schema version znode", older_daemon_writes_1),)
        assert ensure_schema(old.client, root, holder="test", migrations=steps) == 1
        assert read_version(old.client, root)[0] == CODE_VERSION == 1
    finally:
        old.stop()
