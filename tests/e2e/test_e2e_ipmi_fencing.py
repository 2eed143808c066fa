"""Fencing over real IPMI: a 3-node local cluster whose nodes each have a virtual BMC
(virtualbmc on a loopback UDP port, its chassis a 64 MiB KVM domain on qemu:///system).

The harness (tests/ipmi_harness.py) makes the chassis the node's power: chassis off
SIGKILLs the node's pvcnoded, chassis on starts it again. The primary's fence agent is
the product's own ``IpmiAgent``, running the real ``ipmitool -I lanplus``; in the last
crash, its ``fence-agents`` agent running ClusterLabs' ``fence_ipmilan`` (Debian's
fence-agents), whose ``status`` first answers on, and an error (never off) with a wrong
password.

- A crashed node (pvcnoded SIGKILLed, its chassis still on) is fenced over IPMI: the
  chassis goes off, the fence confirms it, its VMs run elsewhere, ``Fenced`` is
  True/PoweredOff, and the primary powers it on again, so it boots and is Ready.
- A node whose BMC password is wrong cannot be fenced: its chassis stays on, its VMs
  stay where they were (not recovered), ``Fenced`` is False/FenceFailed.
- Never two running copies of a VM, at any time; the IPMI password never shows in the
  API's answers, in any process' command line during a fence, or in the logs.

Skips, saying why, without root, /dev/kvm, libvirtd, ipmitool or virtualbmc, and fails
at once, with QEMU's reason, where QEMU cannot use /dev/kvm (the ``system_libvirtd``
fixture checks that before the cluster and the BMCs start).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from controllers.fencing import agent_for
from hypervisor.fence import FenceAgentsAgent, FenceError, PowerState
from localcluster.libvirtd import LibvirtDaemon
from localcluster.process import pid_alive
from schemas import FenceConfig
from schemas.fence_agents import resolve_agent
from tests.ha_invariants import Invariants
from tests.ha_manifests import cluster_object
from tests.helpers import holds_for, wait_for
from tests.ipmi_harness import Bmc, IpmiHarness, ipmi_skip_reason
from tests.kvm_fixtures import system_libvirtd
from tests.localcluster_fixture import RunningCluster, start_cluster

__all__ = ["system_libvirtd"]  # a fixture, imported for pytest

SKIP_REASON = ipmi_skip_reason()
pytestmark = [
    pytest.mark.kvm,
    pytest.mark.skipif(SKIP_REASON is not None, reason=SKIP_REASON or ""),
]

NODES = ["node1", "node2", "node3"]
# keepalive 1 s: dead after 3 s of silence, then 3 s of saving throws, then the fence.
VMS = [f"ipmi{i}" for i in range(6)]
WRONG_PASSWORD = "not-the-bmc-password"
# This host is shared and often loaded: the deadlines are generous, the measured
# timings are printed and checked only for their order.
DEADLINE = 60.0


@dataclass
class Env:
    cluster: RunningCluster
    harness: IpmiHarness

    @property
    def secrets(self) -> set[str]:
        return {bmc.password for bmc in self.harness.bmcs.values()} | {WRONG_PASSWORD}


# -- API helpers -----------------------------------------------------------------------


def apply(cluster: RunningCluster, *objects: dict[str, Any]) -> None:
    response = cluster.api("POST", "/api/v1/apply", json=list(objects))
    assert response.status_code == 200, response.text


def vms(cluster: RunningCluster) -> dict[str, dict[str, Any]]:
    return {v["metadata"]["name"]: v for v in cluster.items("vms")}


def node_json(cluster: RunningCluster, name: str) -> dict[str, Any]:
    response = cluster.api("GET", f"/api/v1/nodes/{name}")
    assert response.status_code == 200, response.text
    return dict(response.json())


def node_status(cluster: RunningCluster, name: str) -> dict[str, Any]:
    return dict(node_json(cluster, name).get("status") or {})


def condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions", []) if c["type"] == type_), {})


def fenced_with(cluster: RunningCluster, node: str, reason: str) -> dict[str, Any] | None:
    """The node's Fenced condition once it has ``reason``."""
    found = condition(node_status(cluster, node), "Fenced")
    return found if found.get("reason") == reason else None


def primary(cluster: RunningCluster) -> str | None:
    cluster_obj = cluster.api("GET", "/api/v1/clusters/cluster").json()
    found = (cluster_obj.get("status") or {}).get("primary")
    return str(found) if found else None


def set_fence(cluster: RunningCluster, node: str, fence: dict[str, Any]) -> dict[str, Any]:
    """PUT the Node with a new ``spec.fence``; returns the API's answer."""
    body = node_json(cluster, node)
    body.pop("status", None)
    body["spec"]["fence"] = fence
    response = cluster.api("PUT", f"/api/v1/nodes/{node}", json=body)
    assert response.status_code == 200, response.text
    return dict(response.json())


def node_pid(cluster: RunningCluster, node: str) -> int:
    state = cluster.cluster.load_state()
    assert state is not None
    return state.nodes[node]


def ready(cluster: RunningCluster, node: str) -> bool:
    status = node_status(cluster, node)
    return (
        status.get("daemonState") == "run"
        and condition(status, "Ready").get("status") == "True"
        and pid_alive(node_pid(cluster, node))
    )


def all_running(cluster: RunningCluster) -> bool:
    current = vms(cluster)
    return len(current) == len(VMS) and all(
        (v.get("status") or {}).get("phase") == "Running" for v in current.values()
    )


def placed_on(cluster: RunningCluster, node: str) -> list[str]:
    return sorted(n for n, v in vms(cluster).items() if (v.get("status") or {}).get("node") == node)


def pick_victim(cluster: RunningCluster) -> tuple[str, list[str]]:
    """A live non-primary node that runs VMs, and those VMs."""
    wait_for(lambda: all_running(cluster), DEADLINE, "every VM Running")
    leader = wait_for(lambda: primary(cluster), 20, "a primary")
    for node in NODES:
        if node != leader and ready(cluster, node) and placed_on(cluster, node):
            return node, placed_on(cluster, node)
    pytest.fail(f"no live non-primary node with VMs (primary {leader}, VMs {vms(cluster)})")


def log_text(cluster: RunningCluster) -> dict[str, str]:
    return {
        p.name: p.read_text(errors="replace") for p in sorted(cluster.cluster.dir.glob("*.log"))
    }


_STAMP = r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) \S+ \S+ "


def log_time(text: str, message: str) -> datetime | None:
    """The time of the last log line containing ``message`` (pvcnoded's asctime format)."""
    found = re.findall(_STAMP + r".*" + re.escape(message), text, re.MULTILINE)
    return datetime.strptime(found[-1], "%Y-%m-%d %H:%M:%S,%f") if found else None


def settle(cluster: RunningCluster, beats: int = 4) -> None:
    """Wait until every node is Ready after ``beats`` fresh heartbeats under the fast profile.

    Shrinking keepaliveInterval (5 s by default, 1 s here) can get healthy nodes declared
    dead for a moment: the primary measures silence that began under the old interval
    against the new, shorter window (event=node_dead ... 'no heartbeat for 4.2s', then
    saving_throw_passed), and the scheduler places nothing on them meanwhile. Once each
    node has beaten a few times at the new pace, the primary's view is fresh.
    """
    seen: dict[str, set[str]] = {node: set() for node in NODES}

    def fresh() -> bool:
        for node in NODES:
            heartbeat = node_status(cluster, node).get("lastHeartbeat")
            if heartbeat:
                seen[node].add(heartbeat)
        return all(len(s) > beats for s in seen.values()) and all(ready(cluster, n) for n in NODES)

    wait_for(fresh, DEADLINE, f"{beats} fresh heartbeats from every node", interval=0.2)


class CmdlineWatch:
    """Samples every process' command line while a scenario runs: no secret may show."""

    def __init__(self, secrets: set[str]) -> None:
        self.secrets = {s.encode() for s in secrets}
        self.leaks: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> CmdlineWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            for entry in os.listdir("/proc"):
                if not entry.isdigit():
                    continue
                try:
                    cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
                except OSError:
                    continue
                if any(secret in cmdline for secret in self.secrets):
                    self.leaks.append(cmdline.replace(b"\0", b" ").decode(errors="replace"))


# -- the cluster and its BMCs ----------------------------------------------------------


@pytest.fixture(scope="module")
def env(system_libvirtd: LibvirtDaemon, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    base = tmp_path_factory.mktemp("ipmi-fencing")
    with contextlib.contextmanager(start_cluster)(base / "cluster", nodes=3) as cluster:
        started = time.monotonic()
        with IpmiHarness(
            base / "bmc",
            NODES,
            kill_node=cluster.cluster.kill_node,
            start_node=cluster.cluster.start_node,
            uri=system_libvirtd.uri,
        ) as harness:
            print(f"\nvbmcd and 3 BMCs answered after {harness.ready_seconds:.2f}s")
            powering = time.monotonic()
            harness.power_on_all(timeout=DEADLINE)
            print(f"3 chassis powered on over IPMI in {time.monotonic() - powering:.2f}s")
            # The fast profile first, then the VMs once every node beats at its pace: while
            # the primary wrongly counts a node dead (see settle), nothing is placed there.
            apply(cluster, cluster_object())
            for node, bmc in harness.bmcs.items():
                answer = set_fence(cluster, node, bmc.fence_config())
                assert bmc.password not in str(answer)
            settle(cluster)
            apply(
                cluster,
                *[
                    {
                        "apiVersion": "pvc/v1",
                        "kind": "VirtualMachine",
                        "metadata": {"name": name},
                        "spec": {"memory": "128Mi"},
                    }
                    for name in VMS
                ],
            )
            wait_for(lambda: all_running(cluster), DEADLINE, "six VMs Running")
            # Two non-primary nodes with VMs: one per scenario.
            leader = primary(cluster)
            assert all(placed_on(cluster, n) for n in NODES if n != leader), vms(cluster)
            print(f"cluster with IPMI fencing ready in {time.monotonic() - started:.2f}s")
            yield Env(cluster, harness)
            assert harness.errors == []


# -- tests -----------------------------------------------------------------------------


def test_every_node_has_a_bmc_and_an_ipmi_fence_agent(env: Env) -> None:
    for node, bmc in env.harness.bmcs.items():
        result = bmc.ipmitool("chassis", "power", "status")
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "Chassis Power is on"
        assert env.harness.powered(node)
        fence = node_json(env.cluster, node)["spec"]["fence"]
        assert fence["agent"] == "ipmi" and fence["address"] == bmc.address
        assert fence["user"] == bmc.user and fence["password"] == "********"
        assert ready(env.cluster, node)


def test_a_crashed_node_is_fenced_over_ipmi_recovered_and_powered_on(env: Env) -> None:
    crash_and_fence(env, "ipmi")


def fence_agents_config(bmc: Bmc) -> dict[str, Any]:
    """The Node's ``spec.fence`` for this BMC through ClusterLabs' fence_ipmilan."""
    return {
        "agent": "fence-agents",
        "fenceAgent": "fence_ipmilan",
        "address": bmc.address,
        "user": bmc.user,
        "password": bmc.password,
        "options": {"lanplus": "1", "power_wait": "0"},
    }


def crash_and_fence(env: Env, agent: str) -> None:
    """SIGKILL a non-primary node's pvcnoded (its chassis stays on) whose Node has the
    fence ``agent`` ("ipmi" or "fence-agents"); the primary fences it through that agent,
    recovers its VMs and powers it on again."""
    cluster, harness = env.cluster, env.harness
    victim, victim_vms = pick_victim(cluster)
    leader = primary(cluster)
    bmc = harness.bmcs[victim]
    if agent == "fence-agents":
        answer = set_fence(cluster, victim, fence_agents_config(bmc))
        assert bmc.password not in str(answer)
        assert answer["spec"]["fence"]["fenceAgent"] == "fence_ipmilan"
        # The real fence_ipmilan through the agent: status exits 0 (on) here; with a wrong
        # password it exits 1, an error and never "off", so nothing would be recovered.
        config = FenceConfig.model_validate(fence_agents_config(bmc))
        right = agent_for(config)
        assert isinstance(right, FenceAgentsAgent) and right.power_status() == PowerState.ON
        wrong = agent_for(config.model_copy(update={"password": SecretStr(WRONG_PASSWORD)}))
        assert wrong is not None
        with pytest.raises(FenceError, match=r"fence_ipmilan.*status exited 1") as refused:
            wrong.power_status()
        assert WRONG_PASSWORD not in str(refused.value)
    specs = {n: v["spec"] for n, v in vms(cluster).items()}
    old_pid = node_pid(cluster, victim)
    events_before = len(harness.events_for(victim))
    with Invariants(cluster) as checks, CmdlineWatch(env.secrets) as cmdlines:
        crashed = time.monotonic()
        os.kill(old_pid, signal.SIGKILL)  # a crash: the chassis stays on
        wait_for(lambda: not pid_alive(old_pid), 5, f"{victim}'s pvcnoded to die")
        assert harness.powered(victim)
        # The primary declares it dead, waits out the saving throws, then `ipmitool
        # chassis power off` reaches the BMC, which destroys the chassis domain.
        harness.wait_event(victim, "off", events_before, DEADLINE)
        fenced = wait_for(
            lambda: fenced_with(cluster, victim, "PoweredOff"),
            DEADLINE,
            f"{victim} Fenced/PoweredOff",
        )
        assert fenced is not None and fenced["status"] == "True"
        assert f"confirmed off by {agent} " in fenced["message"]
        wait_for(
            lambda: all(
                (s := vms(cluster)[n].get("status") or {}).get("phase") == "Running"
                and s.get("node") not in (None, victim)
                for n in victim_vms
            ),
            DEADLINE,
            f"{victim_vms} Running on other nodes",
        )
        recovered_at = time.monotonic()
        # Then the primary powers the node on again: the chassis boots, and so does the node.
        harness.wait_event(victim, "on", events_before, DEADLINE)
        wait_for(lambda: ready(cluster, victim), DEADLINE, f"{victim} Ready again")
        back_at = time.monotonic()
    # fence_ipmilan itself passes the password to ipmitool as -P, which ipmitool overwrites
    # with XXXX as it starts (docs/ha.md): PVC's own command lines (fence_ipmilan's too,
    # which reads it from stdin) must never hold it.
    own = [
        c for c in cmdlines.leaks if agent == "ipmi" or not c.split(" ", 1)[0].endswith("ipmitool")
    ]
    assert own == []
    if agent == "fence-agents":
        set_fence(cluster, victim, bmc.fence_config())  # back to ipmi, as the module set it
    assert node_pid(cluster, victim) != old_pid
    # Exactly one power cycle, off then on: one fence for one death.
    cycle = harness.events_for(victim)[events_before:]
    assert [what for _, what in cycle] == ["off", "on"], harness.max_poll_gap
    off_at, on_at = cycle[0][0], cycle[1][0]
    assert {n: v["spec"] for n, v in vms(cluster).items()} == specs  # no spec lost
    assert len({epoch for _, epoch in checks.primaries}) == 1  # no new primary, no new term
    assert all(vms(cluster)[n]["status"]["node"] != victim for n in victim_vms)
    # The primary did it, through the IPMI agent; its log says how long the fence took.
    logs = log_text(cluster)
    primary_log = logs[f"{leader}.log"]
    started = log_time(primary_log, f'event=fence_start node={victim} agent="{agent} ')
    done = log_time(primary_log, f"event=node_fenced node={victim}")
    assert started is not None and done is not None, primary_log[-3000:]

    # Nobody but the primary powers a chassis on; its ipmitool returns once the BMC has
    # started the chassis domain, which on a loaded host can outlast the agent's 10 s
    # deadline (then it logs power_on_failed, though the chassis did come on).
    def power_on_line() -> str | None:
        pattern = rf"event=(node_powered_on|power_on_failed) node={victim}\b.*"
        found = re.search(pattern, log_text(cluster)[f"{leader}.log"])
        return found.group(0) if found else None

    powered_on = wait_for(power_on_line, DEADLINE, f"the primary's power on of {victim}")
    fence_seconds = (done - started).total_seconds()
    print(
        f"\n{victim} ({agent}): crash -> chassis off over IPMI {off_at - crashed:.2f}s, "
        f"fence (power off + confirmed off) {fence_seconds:.2f}s, "
        f"crash -> VMs running elsewhere {recovered_at - crashed:.2f}s, "
        f"crash -> chassis on {on_at - crashed:.2f}s, crash -> node Ready {back_at - crashed:.2f}s"
        f"; primary: {powered_on}"
    )
    # 3 s to be declared dead and 3 s of saving throws come before any power off.
    assert off_at - crashed >= 6.0
    assert 0.0 <= fence_seconds < 30.0


def test_a_wrong_ipmi_password_fails_the_fence_and_recovers_nothing(env: Env) -> None:
    cluster, harness = env.cluster, env.harness
    victim, victim_vms = pick_victim(cluster)
    bmc = harness.bmcs[victim]
    answer = set_fence(cluster, victim, bmc.fence_config(password=WRONG_PASSWORD))
    assert WRONG_PASSWORD not in str(answer)
    old_pid = node_pid(cluster, victim)
    events_before = len(harness.events_for(victim))
    with Invariants(cluster), CmdlineWatch(env.secrets) as cmdlines:
        crashed = time.monotonic()
        os.kill(old_pid, signal.SIGKILL)
        failed = wait_for(
            lambda: fenced_with(cluster, victim, "FenceFailed"),
            DEADLINE,
            f"{victim} Fenced/FenceFailed",
        )
        failed_at = time.monotonic()
        assert failed is not None and failed["status"] == "False"
        assert "power off failed" in failed["message"] and "not recovered" in failed["message"]

        # Nothing moves: the VMs stay placed on the node nobody could power off.
        def nothing_moves() -> bool:
            current = vms(cluster)
            assert all(current[n]["status"].get("node") == victim for n in victim_vms)
            return all(current[n]["status"].get("phase") != "Running" for n in victim_vms)

        holds_for(nothing_moves, 2.0, f"{victim}'s VMs left where they are")
    assert cmdlines.leaks == []
    # The BMC refused the login, so the chassis never went off.
    assert harness.events_for(victim)[events_before:] == []
    assert harness.powered(victim)
    status = bmc.ipmitool("chassis", "power", "status")
    assert status.stdout.strip() == "Chassis Power is on", status.stderr
    primary_log = log_text(cluster)[f"{primary(cluster)}.log"]
    assert f"event=fence_failed node={victim}" in primary_log
    print(f"\n{victim}: crash -> FenceFailed {failed_at - crashed:.2f}s")
    # Bring the node back (as an admin would after fixing the BMC), so the cluster is whole.
    set_fence(cluster, victim, bmc.fence_config())
    cluster.cluster.start_node(victim)
    wait_for(lambda: ready(cluster, victim), DEADLINE, f"{victim} Ready again")
    wait_for(lambda: all_running(cluster), DEADLINE, "every VM Running again")
    assert placed_on(cluster, victim) == victim_vms


@pytest.mark.skipif(
    resolve_agent("fence_ipmilan") is None,
    reason="fence_ipmilan is not installed (Debian package fence-agents)",
)
def test_a_crashed_node_is_fenced_by_fence_ipmilan_recovered_and_powered_on(env: Env) -> None:
    """After the wrong-password test, whose victim runs VMs again: the same story through
    the fence-agents agent running ClusterLabs' fence_ipmilan."""
    crash_and_fence(env, "fence-agents")


def test_the_ipmi_password_never_leaves_the_node_spec(env: Env) -> None:
    cluster = env.cluster
    answers = [
        cluster.api("GET", "/api/v1/nodes").text,
        *(cluster.api("GET", f"/api/v1/nodes/{node}").text for node in NODES),
        cluster.api("GET", "/api/v1/events", params={"limit": 1000}).text,
        cluster.pvcctl("get", "nodes", "-o", "yaml").stdout,
    ]
    for secret in env.secrets:
        for answer in answers:
            assert secret not in answer
        for name, text in log_text(cluster).items():
            assert secret not in text, f"an IPMI password is in {name}"
