"""The ordered handover with real processes: floating addresses move from the old primary to
the new one (never held by two), a handover waits for a drain step in flight and a flush
waits for the handover, and a primary killed in the middle of a takeover is replaced.

Each node's host network is a network namespace these tests create, with a bridge that
carries the floating address. A kazoo client in the test holds the read side of the
handover lock, as the drain step of a primary would, to hold a handover at a known phase.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from kazoo.recipe.lock import ReadLock

from localcluster.process import signal_ours
from tests.ha_invariants import Invariants
from tests.ha_manifests import cluster_object
from tests.helpers import holds_for, wait_for
from tests.localcluster_fixture import RunningCluster, start_cluster

NODES = ["node1", "node2", "node3"]
FLOATING = "10.254.77.1/24"
BRIDGE = "pvcfloat0"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")


def ip(*args: str) -> str:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)
    if result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr}")
    return result.stdout


@pytest.fixture
def namespaces() -> Iterator[dict[str, str]]:
    tag = uuid.uuid4().hex[:6]
    made: dict[str, str] = {}
    try:
        for node in NODES:
            ns = f"pvch-{tag}-{node[-1]}"
            ip("netns", "add", ns)
            made[node] = ns
            ip("-n", ns, "link", "add", BRIDGE, "type", "bridge")
            ip("-n", ns, "link", "set", BRIDGE, "up")
        yield made
    finally:
        for ns in made.values():
            with contextlib.suppress(RuntimeError):
                ip("netns", "del", ns)


@pytest.fixture
def cluster(tmp_path: Path, namespaces: dict[str, str]) -> Iterator[RunningCluster]:
    networks: dict[str, dict[str, object]] = {
        node: {
            "namespace": ns,
            "floatingAddresses": [{"address": FLOATING, "interface": BRIDGE}],
        }
        for node, ns in namespaces.items()
    }
    yield from start_cluster(
        tmp_path / "handover", nodes=3, session_timeout="4s", node_networks=networks
    )


def holders(namespaces: dict[str, str]) -> list[str]:
    """The nodes whose namespace holds the floating address now."""
    found = []
    for node, ns in namespaces.items():
        links = json.loads(ip("-j", "-n", ns, "addr", "show", "dev", BRIDGE) or "[]")
        held = {f"{a['local']}/{a['prefixlen']}" for link in links for a in link["addr_info"]}
        if FLOATING in held:
            found.append(node)
    return found


class AddressWatch:
    """Samples every namespace all through a scenario: never two holders at once."""

    def __init__(self, namespaces: dict[str, str]) -> None:
        self.namespaces = namespaces
        self.doubles: list[list[str]] = []
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> AddressWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(10)
        assert self.doubles == [], f"the floating address was held twice: {self.doubles}"
        assert self.samples > 10

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            now = holders(self.namespaces)
            self.samples += 1
            if len(now) > 1:
                self.doubles.append(now)


def vm(name: str, home: str) -> dict[str, Any]:
    return {
        "apiVersion": "pvc/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": name},
        "spec": {"memory": "128Mi", "placement": {"home": home}},
    }


def router_states(cluster: RunningCluster) -> dict[str, str]:
    return {
        n["metadata"]["name"]: (n.get("status") or {}).get("routerState", "")
        for n in cluster.items("nodes")
    }


def settled_primary(cluster: RunningCluster) -> str:
    def one() -> str | None:
        states = router_states(cluster)
        primaries = [n for n, s in states.items() if s == "primary"]
        others = {s for n, s in states.items() if s != "primary"}
        return primaries[0] if len(primaries) == 1 and others == {"secondary"} else None

    return wait_for(one, 40, "exactly one primary, the rest secondary")


def vm_nodes(cluster: RunningCluster) -> dict[str, tuple[str | None, str | None]]:
    return {
        v["metadata"]["name"]: (
            (v.get("status") or {}).get("node"),
            (v.get("status") or {}).get("phase"),
        )
        for v in cluster.items("vms")
    }


@contextlib.contextmanager
def drain_step_in_flight(cluster: RunningCluster) -> Iterator[ReadLock]:
    """Hold the read side of the handover lock, as a primary's drain step does."""
    client = cluster.zk_client()
    try:
        lock = client.ReadLock(f"{cluster.state.root}/locks/primary-handover", "test-step")
        assert lock.acquire(timeout=10)
        try:
            yield lock
        finally:
            with contextlib.suppress(Exception):
                lock.release()
    finally:
        client.stop()
        client.close()


def log_time(cluster: RunningCluster, node: str, event: str) -> datetime:
    """When ``event`` last appears in the node's log (one host, one clock)."""
    text = (cluster.cluster.dir / f"{node}.log").read_text()
    stamps = re.findall(rf"^(\S+ \S+) \S+ \S+ event={event}\b", text, re.MULTILINE)
    assert stamps, f"no event={event} in {node}.log"
    return datetime.strptime(stamps[-1], "%Y-%m-%d %H:%M:%S,%f")


def test_switchover_moves_the_address_in_order_and_a_flush_waits_for_it(
    cluster: RunningCluster, namespaces: dict[str, str]
) -> None:
    cluster.apply(cluster_object())
    old = settled_primary(cluster)
    wait_for(lambda: holders(namespaces) == [old], 20, f"{FLOATING} on {old} only")
    new, bystander = (n for n in NODES if n != old)
    cluster.apply(vm("hv-a", bystander), vm("hv-b", bystander))
    wait_for(
        lambda: all(vm_nodes(cluster).get(n) == (bystander, "Running") for n in ("hv-a", "hv-b")),
        30,
        "VMs Running on the bystander",
    )
    with Invariants(cluster), AddressWatch(namespaces):
        with drain_step_in_flight(cluster):
            cluster.apply(cluster_object(primary=new))
            # The old primary waits for the step in flight before it lets anyone in.
            wait_for(lambda: router_states(cluster)[old] == "relinquish", 10, f"{old} relinquish")
            assert cluster.api("POST", f"/api/v1/nodes/{bystander}/flush").status_code == 200

            def nothing_moves() -> bool:
                states = router_states(cluster)
                assert states[new] == "secondary", states
                assert holders(namespaces) == [old]
                return all(n == bystander for n, _ in vm_nodes(cluster).values())

            holds_for(nothing_moves, 3.0, "nothing moves during the handover", 0.2)
        done = cluster.pvcctl("node", "primary", new, "--wait", "--timeout", "30s")
        assert done.returncode == 0, done.stdout + done.stderr
        assert holders(namespaces) == [new]
        flushed = cluster.pvcctl("node", "flush", bystander, "--wait", "--timeout", "60s")
        assert flushed.returncode == 0, flushed.stdout + flushed.stderr
        assert all(n not in (None, bystander) for n, _ in vm_nodes(cluster).values())
    released = log_time(cluster, old, "floating_address_released")
    taken = log_time(cluster, new, "floating_address_taken")
    assert released <= taken, (released, taken)


def test_a_primary_killed_during_its_takeover_is_replaced(
    cluster: RunningCluster, namespaces: dict[str, str]
) -> None:
    cluster.apply(cluster_object())
    first = settled_primary(cluster)
    cluster.apply(*(vm(f"tk-{n}", n) for n in NODES))
    wait_for(
        lambda: all(vm_nodes(cluster).get(f"tk-{n}", (None, None))[1] == "Running" for n in NODES),
        30,
        "one VM Running on each node",
    )
    with Invariants(cluster), drain_step_in_flight(cluster) as step:
        cluster.cluster.signal(first, signal.SIGKILL)
        # The next winner bumps the epoch and then waits in takeover for the handover lock.
        second = wait_for(
            lambda: next((n for n, s in router_states(cluster).items() if s == "takeover"), None),
            30,
            "a node in takeover",
        )
        assert second != first
        # A killed process leaves its last routerState behind; no live node is primary.
        live = {n: s for n, s in router_states(cluster).items() if n != first}
        assert "primary" not in live.values(), live
        cluster.cluster.signal(second, signal.SIGKILL)
        third = next(n for n in NODES if n not in (first, second))
        wait_for(lambda: router_states(cluster)[third] == "takeover", 30, f"{third} in takeover")
        step.release()
        wait_for(lambda: router_states(cluster)[third] == "primary", 30, f"{third} primary")
        # The new primary fences both dead nodes (the local power agent restarts them) and
        # brings their VMs back: each exactly once.
        wait_for(
            lambda: all(
                vm_nodes(cluster).get(f"tk-{n}", (None, None))[1] == "Running" for n in NODES
            ),
            60,
            "every VM Running again",
        )
        assert settled_primary(cluster) == third
    # The killed nodes dropped what their crash left behind when they started again.
    wait_for(lambda: holders(namespaces) == [third], 20, f"{FLOATING} on {third} only")


def test_a_primary_cut_off_from_zookeeper_drops_the_address_before_its_session_ends(
    cluster: RunningCluster, namespaces: dict[str, str]
) -> None:
    cluster.apply(cluster_object(maintenance=True))  # an outage must fence nobody anyway
    first = settled_primary(cluster)
    wait_for(lambda: holders(namespaces) == [first], 20, f"{FLOATING} on {first}")
    zookeeper = cluster.cluster.signal("zookeeper", signal.SIGSTOP)
    paused = time.monotonic()
    try:
        # kazoo suspends after 2/3 of the 4 s session; another node could take the
        # address once the session has expired, so it must be gone before that.
        wait_for(lambda: holders(namespaces) == [], 4.0, "the address dropped")
        dropped_after = time.monotonic() - paused
    finally:
        signal_ours(zookeeper, signal.SIGCONT, cluster.cluster.marker("zookeeper"))
    assert dropped_after < 4.0
    primary = settled_primary(cluster)
    wait_for(lambda: holders(namespaces) == [primary], 20, f"{FLOATING} back on {primary}")
