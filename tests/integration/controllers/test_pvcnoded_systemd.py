"""pvcnoded under systemd's eyes: a real unix datagram socket as NOTIFY_SOCKET, as systemd
listens on it. READY=1 comes only once the daemon has registered its Node and holds its
lease; WATCHDOG=1 comes at the heartbeat rate; a heartbeat loop that hangs (its libvirt
call does not return) stops the pings, so systemd's WatchdogSec restarts the daemon."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from controllers.config import DaemonConfig
from controllers.daemon import Daemon, hypervisor_uri
from controllers.daemon import main as daemon_main
from hypervisor import LibvirtDriver
from localcluster.zookeeper import ZooKeeperServer
from schemas import Cluster, ClusterSpec, FencingConfig, Node, ObjectMeta
from schemas.sdnotify import Notifier
from tests.chaos.gates import CallLog, DriverHooks, Gate, GatedDriver
from tests.helpers import wait_for
from tests.sdnotify_listener import Listener, listening
from zkstore import Lease, Store, paths

KEEPALIVE = 0.5


@pytest.fixture(scope="module")
def store(zookeeper: ZooKeeperServer) -> Iterator[Store]:
    the_store = Store(zookeeper.hosts, f"/test-{uuid.uuid4().hex[:12]}", timeout=6.0)
    the_store.start()
    the_store.create(
        Cluster(
            metadata=ObjectMeta(name="cluster"),
            spec=ClusterSpec(fencing=FencingConfig(keepalive_interval=f"{KEEPALIVE * 1000:g}ms")),
        )
    )
    yield the_store
    the_store.stop()


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[Listener]:
    yield from listening(tmp_path)


def node_config(zookeeper: ZooKeeperServer, store: Store, node: str, path: Path) -> dict[str, Any]:
    return {
        "node": node,
        "zookeeper": zookeeper.hosts,
        "root": store.root,
        "libvirt": {"testHost": {"memory": "4Gi", "cpus": 2}, "diskDir": str(path / "d")},
        "network": {"manage": False, "runDir": str(path / "run")},
        "stateDir": str(path),
        "sessionTimeout": "4s",
    }


def gaps(times: list[float]) -> list[float]:
    return [round(b - a, 2) for a, b in itertools.pairwise(times)]


def test_ready_only_with_its_lease_then_watchdog_at_heartbeat_rate(
    zookeeper: ZooKeeperServer, store: Store, listener: Listener, tmp_path: Path
) -> None:
    config = tmp_path / "pvcnoded.yaml"
    config.write_text(yaml.safe_dump(node_config(zookeeper, store, "sd1", tmp_path)))
    # Someone else (a previous incarnation's session) still holds sd1's lease.
    squatter = Lease(store, paths.node_lease("sd1"), {"node": "sd1", "squatter": True})
    squatter.acquire(wait=0)
    env = {**os.environ, "NOTIFY_SOCKET": listener.path, "WATCHDOG_USEC": "20000000"}
    with (tmp_path / "pvcnoded.log").open("w") as log:
        daemon = subprocess.Popen(
            [sys.executable, "-m", "controllers.daemon", "--config", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        wait_for(lambda: store.exists(Node, "sd1"), 30, "sd1 to register its Node")
        assert listener.next("READY=1", timeout=1.0) is None, "READY=1 before it held its lease"
        squatter.release()
        assert listener.next("READY=1", timeout=20) is not None, tmp_path / "pvcnoded.log"
        holder = store.client.get(store.path(paths.node_lease("sd1")))[0]
        assert b"squatter" not in holder  # the daemon's own lease, not the one released
        pings = listener.all("WATCHDOG=1", seconds=5 * KEEPALIVE)
        # At the heartbeat rate: one per keepaliveInterval (and one per extra heartbeat a
        # change pokes), never a gap of two intervals.
        assert 3 <= len(pings) <= 10, gaps(pings)
        assert max(gaps(pings)) < 2 * KEEPALIVE, gaps(pings)
        daemon.terminate()
        assert listener.next("STOPPING=1", timeout=10) is not None
        assert daemon.wait(20) == 0
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()


def test_a_hung_heartbeat_loop_stops_the_watchdog_pings(
    zookeeper: ZooKeeperServer, store: Store, listener: Listener, tmp_path: Path
) -> None:
    config = DaemonConfig.model_validate(node_config(zookeeper, store, "sd2", tmp_path))
    # The heartbeat's libvirt call (host facts) stops returning while the gate is paused:
    # a libvirtd that hangs, or a daemon thread stuck in it.
    gate = Gate("sd2")
    driver = GatedDriver(
        LibvirtDriver(hypervisor_uri(config)), "sd2", 1, gate, DriverHooks(), CallLog()
    )
    daemon = Daemon(config, driver=driver, notifier=Notifier(listener.path, watchdog_seconds=20))
    thread = threading.Thread(target=daemon.run, name="pvcnoded-sd2", daemon=True)
    thread.start()
    try:
        assert listener.next("READY=1", timeout=20) is not None
        assert listener.next("WATCHDOG=1", timeout=3 * KEEPALIVE) is not None
        gate.pause()
        listener.next("WATCHDOG=1", timeout=2 * KEEPALIVE)  # one may have been under way
        listener.drain()
        assert listener.next("WATCHDOG=1", timeout=6 * KEEPALIVE) is None, "pinged while hung"
        gate.resume()
        assert listener.next("WATCHDOG=1", timeout=3 * KEEPALIVE) is not None, "no ping after"
    finally:
        gate.resume()
        daemon.stopped.set()
        thread.join(20)
    assert not thread.is_alive()


def test_an_unknown_log_level_stops_it_at_start_saying_which_are_known(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "pvcnoded.yaml"
    config.write_text("logLevel: verbose\n")
    assert daemon_main(["--config", str(config)]) == 2  # what the pvcnoded command runs
    assert capsys.readouterr().err.strip() == (
        f"pvcnoded: {config}: logLevel: Input should be 'debug', 'info', 'warning', 'error' "
        "or 'critical'"
    )
