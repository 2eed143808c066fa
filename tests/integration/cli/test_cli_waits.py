"""pvcctl waits that mean done, through the real binary against a real pvcapid: ``wait`` by
name, -l and --all, conditions only at the current generation, jsonpath, NotFound at once;
the VM verbs' --wait."""

from __future__ import annotations

import os
import pty
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from cli.errors import InputError
from cli.wait_commands import _split_jsonpath, jsonpath_check, targets
from localcluster.zookeeper import ZooKeeperServer
from schemas import Condition, ConditionStatus, VirtualMachine, VirtualMachineStatus, VMPhase
from tests.helpers import vm_manifest, wait_for
from tests.integration.cli.cli_fixture import PVCCTL, Api, manifest, one_line_error, start_api
from tests.localcluster_fixture import RunningCluster, start_cluster


@pytest.fixture(scope="module")
def api(zookeeper: ZooKeeperServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    yield from start_api(zookeeper, tmp_path_factory.mktemp("home"))


def apply(api: Api, tmp_path: Path, *docs: str) -> None:
    path = tmp_path / "vms.yaml"
    path.write_text("---\n".join(docs))
    result = api.pvcctl("apply", "-f", str(path))
    assert result.returncode == 0, result.stderr


def status(
    phase: VMPhase, converged: bool, generation: int = 1, node: str | None = None
) -> VirtualMachineStatus:
    state = ConditionStatus.TRUE if converged else ConditionStatus.FALSE
    return VirtualMachineStatus(
        observed_generation=generation,
        phase=phase,
        node=node,
        conditions=[Condition(type="Converged", status=state, reason=phase.value)],
    )


def start(api: Api, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [PVCCTL, *args],
        env=api.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def vm_lists(api: Api) -> float:
    """How many GET /api/v1/vms the server has answered (a waiter's first list among them)."""
    text = api.http("GET", "/metrics").text
    pattern = r'pvc_api_requests_total\{code="200",method="GET",route="/api/v1/vms"\} (\S+)'
    found = re.search(pattern, text)
    return float(found.group(1)) if found else 0.0


def listening(api: Api, *args: str) -> subprocess.Popen[str]:
    """A pvcctl started once it has listed the VMs (so it follows the watch from then on)."""
    before = vm_lists(api)
    waiter = start(api, *args)
    wait_for(lambda: vm_lists(api) > before, what="the waiter's first list")
    return waiter


def still_waiting(waiter: subprocess.Popen[str], for_seconds: float = 1.0) -> bool:
    try:
        waiter.wait(timeout=for_seconds)
    except subprocess.TimeoutExpired:
        return True
    return False


def test_parsing_targets_and_jsonpath() -> None:
    assert targets(("vm", "a", "b"))[1] == ["a", "b"]
    assert targets(("vm/a", "vms/b")) == (VirtualMachine, ["a", "b"])
    assert targets(("vm",)) == (VirtualMachine, [])
    for bad in (("vm/a", "node/b"), ("vm/",), ("nope/a",), ()):
        with pytest.raises(InputError):
            targets(bad)
    assert _split_jsonpath("{.status.phase}=Running") == (".status.phase", "Running")
    assert _split_jsonpath("{.status.phase}") == (".status.phase", None)
    assert _split_jsonpath(".spec.vcpus=2") == (".spec.vcpus", "2")
    assert _split_jsonpath('{.status.conditions[?(@.type=="Ready")].status}=True') == (
        '.status.conditions[?(@.type=="Ready")].status',
        "True",
    )
    check = jsonpath_check('{.status.conditions[?(@.type=="Ready")].status}=True').check
    assert check is not None
    ready = {"status": {"conditions": [{"type": "Ready", "status": "True"}]}}
    assert check(ready) and not check({"status": {}})
    numbers = jsonpath_check("{.spec.vcpus}=2").check
    assert numbers is not None and numbers({"spec": {"vcpus": 2}})
    with pytest.raises(InputError, match="invalid JSONPath"):
        jsonpath_check("{.status[}")


def test_wait_for_a_typo_fails_at_once_with_not_found(api: Api) -> None:
    started = time.monotonic()
    result = api.pvcctl("wait", "vm/typo", "--for=condition=Converged", "--timeout=60s")
    assert result.returncode == 1
    assert "vm/typo not found (NotFound)" in one_line_error(result)
    assert time.monotonic() - started < 30  # at once, not after its 60 s
    assert api.pvcctl("wait", "vm/typo", "--for=delete").returncode == 0  # gone is done
    nothing = api.pvcctl("wait", "vm", "-l", "suite=none", "--for=condition=Converged")
    assert nothing.returncode == 1 and "no vms found with suite=none" in one_line_error(nothing)


def on_a_terminal(api: Api, *args: str) -> str:
    """Run pvcctl with a pseudo-terminal as its stdout and stderr; all it wrote there."""
    leader, follower = pty.openpty()
    try:
        run = subprocess.Popen(
            [PVCCTL, *args], env=api.env(), stdout=follower, stderr=follower, text=True
        )
        os.close(follower)
        out = b""
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # EIO: the process closed the terminal
                break
            if not chunk:
                break
            out += chunk
        run.wait(timeout=30)
        return out.decode(errors="replace")
    finally:
        os.close(leader)


def test_waits_show_progress_on_a_terminal(api: Api, tmp_path: Path) -> None:
    apply(api, tmp_path, manifest("wp-a"))
    api.store.write_status(VirtualMachine, "wp-a", status(VMPhase.STOPPED, False))
    shown = on_a_terminal(api, "wait", "vm/wp-a", "--for=condition=Converged", "--timeout=2s")
    assert "waiting for condition=Converged=True on vm/wp-a" in shown
    assert "timed out after 2s" in shown


@pytest.mark.parametrize(
    "args",
    [
        ("vm/a", "--for=ready"),
        ("vm/a", "--for=jsonpath={.status["),
        ("vm/a", "--for=condition="),
        ("vm", "--for=delete"),
        ("vm/a", "--all", "--for=delete"),
        ("vm", "-l", "a=b", "--all", "--for=delete"),
        ("vm/a", "--for=delete", "--timeout=soon"),
    ],
)
def test_bad_waits_are_usage_errors(api: Api, args: tuple[str, ...]) -> None:
    result = api.pvcctl("wait", *args)
    assert result.returncode == 2, result.stderr
    one_line_error(result)


def test_wait_selector_needs_every_match_at_the_current_generation(
    api: Api, tmp_path: Path
) -> None:
    apply(api, tmp_path, manifest("ws-a", {"suite": "ws"}), manifest("ws-b", {"suite": "ws"}))
    waiter = start(api, "wait", "vm", "-l", "suite=ws", "--for=condition=Converged")
    api.store.write_status(VirtualMachine, "ws-a", status(VMPhase.STOPPED, True))
    # Converged, but computed for an older spec: not done.
    api.store.write_status(VirtualMachine, "ws-b", status(VMPhase.RUNNING, True, generation=0))
    assert still_waiting(waiter)
    api.store.write_status(VirtualMachine, "ws-b", status(VMPhase.RUNNING, True))
    out, err = waiter.communicate(timeout=30)
    assert waiter.returncode == 0, err
    assert out.strip() == "vms -l suite=ws condition met (2)"
    # An object that appears later is not waited on; one named that goes away ends the wait.
    waiter = listening(api, "wait", "vm/ws-a", "--for=jsonpath={.status.phase}=Running")
    api.http("DELETE", "/api/v1/vms/ws-a")
    _, err = waiter.communicate(timeout=30)
    assert waiter.returncode == 1 and "vm/ws-a was deleted" in err


def test_wait_jsonpath_and_all(api: Api, tmp_path: Path) -> None:
    apply(api, tmp_path, manifest("wj-a", vcpus=2))
    met = api.pvcctl("wait", "vm/wj-a", "--for=jsonpath={.spec.vcpus}=2", "--timeout=5s")
    assert met.returncode == 0 and met.stdout.strip() == "vm/wj-a condition met"
    waiter = start(api, "wait", "vm", "wj-a", "--for=jsonpath=.status.node=n1", "--timeout=30s")
    assert still_waiting(waiter, 0.5)
    api.store.write_status(VirtualMachine, "wj-a", status(VMPhase.RUNNING, True, node="n1"))
    out, err = waiter.communicate(timeout=30)
    assert waiter.returncode == 0 and out.strip() == "vm/wj-a condition met", err
    timed_out = api.pvcctl("wait", "vm", "--all", "--for=condition=Nope", "--timeout=1s")
    assert timed_out.returncode == 1
    assert "timed out after 1s waiting for condition=Nope=True on: " in timed_out.stderr


# -- the VM verbs' --wait, on a real local cluster (pvcnoded on libvirt's test driver) ------


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCluster]:
    yield from start_cluster(tmp_path_factory.mktemp("vm-waits"), nodes=2)


def cluster_env(cluster: RunningCluster) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("PVC_")}
    return {**base, "PVC_SERVER": cluster.server}


def held_by(cluster: RunningCluster) -> dict[str, list[str]]:
    """Which domains each node's hypervisor holds (its Node status, from the driver)."""
    return {
        n["metadata"]["name"]: sorted((n.get("status") or {}).get("domains") or [])
        for n in cluster.items("nodes")
    }


def holds(cluster: RunningCluster, node1: list[str], node2: list[str]) -> None:
    """The hypervisors agree (node status carries what they run, at the next heartbeat)."""
    want = {"node1": node1, "node2": node2}
    wait_for(lambda: held_by(cluster) == want, 15, f"the hypervisors to hold {want}")


def verb(cluster: RunningCluster, *args: str) -> str:
    result = cluster.pvcctl("vm", *args, "--wait", "--timeout", "90s")
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_vm_verbs_wait_until_it_is_done(cluster: RunningCluster) -> None:
    cluster.apply(vm_manifest("vw", runStrategy="Halted"))
    assert verb(cluster, "start", "vw") == "vm/vw runs"
    # Runs on the node it is placed on, and on no other.
    holds(cluster, ["vw"], [])
    assert verb(cluster, "migrate", "vw", "--to", "node2") == "vm/vw runs on node2"
    holds(cluster, [], ["vw"])
    assert verb(cluster, "unmigrate", "vw") == "vm/vw runs where it returned"
    holds(cluster, ["vw"], [])
    assert verb(cluster, "restart", "vw") == "vm/vw restarted"
    holds(cluster, ["vw"], [])
    assert verb(cluster, "move", "vw", "--to", "node2") == "vm/vw runs on node2"
    holds(cluster, [], ["vw"])
    assert verb(cluster, "stop", "vw") == "vm/vw is stopped"
    holds(cluster, [], [])


def test_vm_wait_failures_exit_1_with_the_reason(cluster: RunningCluster) -> None:
    cluster.apply(vm_manifest("vw-live", method="live"))
    wait_for(lambda: "vw-live" in held_by(cluster)["node1"], 30, "vw-live on node1")
    failed = cluster.pvcctl("vm", "migrate", "vw-live", "--to", "node2", "--wait")
    assert failed.returncode == 1
    assert "did not migrate to node2" in failed.stderr and "it runs on node1" in failed.stderr
    # A VM that cannot run anywhere (more memory than any node has): a timeout, with its state.
    cluster.apply(vm_manifest("vw-big", runStrategy="Halted", memory="64Ti"))
    stuck = cluster.pvcctl("vm", "start", "vw-big", "--wait", "--timeout", "2s")
    assert stuck.returncode == 1
    assert "timed out after 2s waiting until vm/vw-big runs (now: " in stuck.stderr
    bad = cluster.pvcctl("vm", "stop", "vw-live", "--wait", "--timeout", "soon")
    assert bad.returncode == 2 and "--timeout" in bad.stderr
    assert cluster.api("GET", "/api/v1/vms/vw-live").json()["spec"]["runStrategy"] == "Always"


def test_node_flush_waits_without_a_default_deadline(cluster: RunningCluster) -> None:
    helped = cluster.pvcctl("node", "flush", "--help")
    assert "Default: no limit" in " ".join(helped.stdout.split())
    # A live-only VM cannot leave a node of the test driver: it would hold the flush.
    gone = cluster.pvcctl("delete", "vm", "vw-live", "vw-big", "--wait", "--timeout", "60s")
    assert gone.returncode == 0, gone.stderr
    cluster.apply(vm_manifest("vw-flush"), vm_manifest("vw-flush2"))
    holds(cluster, ["vw-flush", "vw-flush2"], [])
    flushed = cluster.pvcctl("node", "flush", "node1", "--wait")
    assert flushed.returncode == 0, flushed.stderr
    assert flushed.stdout.splitlines()[-1] == "node/node1 domainState flushed"
    holds(cluster, [], ["vw-flush", "vw-flush2"])
    ready = cluster.pvcctl("node", "ready", "node1", "--wait")
    assert ready.returncode == 0 and ready.stdout.splitlines()[-1] == "node/node1 domainState ready"
    holds(cluster, ["vw-flush", "vw-flush2"], [])


def test_the_gitops_example_converges_with_a_halted_vm(
    cluster: RunningCluster, tmp_path: Path
) -> None:
    others = [v["metadata"]["name"] for v in cluster.items("vms")]
    if others:
        gone = cluster.pvcctl("delete", "vm", *others, "--wait", "--timeout", "60s")
        assert gone.returncode == 0, gone.stderr
    for name, strategy in (("gw-run", "Always"), ("gw-off", "Halted")):
        doc = vm_manifest(name, runStrategy=strategy)
        doc["metadata"] = {"name": name, "labels": {"app": "gw"}}
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(doc))
    env = {**cluster_env(cluster), "PVCCTL": PVCCTL, "WAIT_TIMEOUT": "60s"}
    script = Path(__file__).parents[3] / "docs" / "gitops-example.sh"
    synced = subprocess.run(
        ["bash", str(script), str(tmp_path), "app=gw"],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
    )
    assert synced.returncode == 0, synced.stdout + synced.stderr
    assert "all vms condition met (2)" in synced.stdout
    assert synced.stdout.rstrip().endswith("synced")
    holds(cluster, ["gw-run"], [])
