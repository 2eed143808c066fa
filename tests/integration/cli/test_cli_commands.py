"""pvcctl through the real binary against a real pvcapid: output, exit codes, dry run, prune,
diff, wait, verbs, contexts, completion."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from localcluster.zookeeper import ZooKeeperServer
from schemas import (
    Condition,
    ConditionStatus,
    Node,
    NodeStatus,
    VirtualMachine,
    VirtualMachineStatus,
    VMPhase,
)
from tests.integration.cli.cli_fixture import PVCCTL, Api, manifest, one_line_error, start_api


@pytest.fixture(scope="module")
def api(zookeeper: ZooKeeperServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    yield from start_api(zookeeper, tmp_path_factory.mktemp("home"))


@pytest.fixture
def files(tmp_path: Path) -> Path:
    return tmp_path


def write(folder: Path, name: str, *docs: str) -> Path:
    path = folder / name
    path.write_text("---\n".join(docs))
    return path


def test_apply_get_in_every_output_format(api: Api, files: Path) -> None:
    path = write(files, "a.yaml", manifest("fmt-a", {"suite": "fmt"}), manifest("fmt-b"))
    applied = api.pvcctl("apply", "-f", str(path))
    assert applied.returncode == 0, applied.stderr
    assert applied.stdout.splitlines() == [
        "virtualmachine/fmt-a created",
        "virtualmachine/fmt-b created",
    ]
    table = api.pvcctl("get", "vms", "-l", "suite=fmt")
    assert table.returncode == 0
    header, *rows = table.stdout.splitlines()
    assert header.split() == ["NAME", "PHASE", "NODE", "VCPUS", "MEMORY", "READY", "AGE"]
    assert [r.split()[0] for r in rows] == ["fmt-a"]
    wide = api.pvcctl("get", "vm", "fmt-a", "-o", "wide").stdout.splitlines()[0].split()
    assert "RUNSTRATEGY" in wide
    one = json.loads(api.pvcctl("get", "vm", "fmt-a", "-o", "json").stdout)
    assert one["kind"] == "VirtualMachine" and one["metadata"]["labels"] == {"suite": "fmt"}
    listed = yaml.safe_load(api.pvcctl("get", "vm", "-o", "yaml").stdout)
    assert listed["kind"] == "VirtualMachineList"
    assert {"fmt-a", "fmt-b"} <= {d["metadata"]["name"] for d in listed["items"]}
    names = api.pvcctl("get", "vm", "-l", "suite=fmt", "-o", "name").stdout.split()
    assert names == ["virtualmachine/fmt-a"]
    again = api.pvcctl("apply", "-f", str(path))
    assert again.stdout.split().count("unchanged") == 2


def test_exit_codes_and_one_line_errors(api: Api, files: Path) -> None:
    missing = api.pvcctl("get", "vm", "nope")
    assert missing.returncode == 1 and "not found" in one_line_error(missing)
    assert api.pvcctl("get", "flavours").returncode == 2
    assert api.pvcctl("get").returncode == 2
    one_line_error(api.pvcctl("get"))
    bad = write(
        files,
        "bad.yaml",
        "apiVersion: pvc/v1\nkind: VirtualMachine\nmetadata: {name: x}\nspec:\n  memory: lots\n",
    )
    result = api.pvcctl("apply", "-f", str(bad))
    assert result.returncode == 2
    assert f"{bad}:5: spec.memory" in one_line_error(result)
    down = api.pvcctl("get", "vms", env={"PVC_SERVER": "http://127.0.0.1:9"})
    assert down.returncode == 1 and "cannot reach" in one_line_error(down)
    selector = api.pvcctl("get", "vms", "-l", "=x")
    assert selector.returncode == 2, selector.stderr


def test_server_dry_run_writes_nothing(api: Api, files: Path) -> None:
    path = write(files, "dry.yaml", manifest("dry-one"))
    result = api.pvcctl("apply", "-f", str(path), "--dry-run=server")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "virtualmachine/dry-one created (server dry run)"
    assert api.http("GET", "/api/v1/vms/dry-one").status_code == 404


def test_prune_removes_only_labelled_objects_missing_from_the_set(api: Api, files: Path) -> None:
    owned = {"set": "prune"}
    first = write(
        files,
        "set.yaml",
        manifest("pr-a", owned),
        manifest("pr-b", owned),
        manifest("pr-other", {"set": "else"}),
    )
    assert api.pvcctl("apply", "-f", str(first)).returncode == 0
    second = write(files, "set2.yaml", manifest("pr-a", owned))
    dry = api.pvcctl("apply", "-f", str(second), "--prune", "-l", "set=prune", "--dry-run=server")
    assert "virtualmachine/pr-b pruned (server dry run)" in dry.stdout
    assert api.http("GET", "/api/v1/vms/pr-b").status_code == 200
    result = api.pvcctl("apply", "-f", str(second), "--prune", "-l", "set=prune")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "virtualmachine/pr-a unchanged",
        "virtualmachine/pr-b pruned",
    ]
    assert api.http("GET", "/api/v1/vms/pr-b").status_code == 404
    assert api.http("GET", "/api/v1/vms/pr-other").status_code == 200
    usage = api.pvcctl("apply", "-f", str(second), "--prune")
    assert usage.returncode == 2 and "-l" in one_line_error(usage)


def test_diff_exit_codes(api: Api, files: Path) -> None:
    path = write(files, "diff.yaml", manifest("df-a"))
    assert api.pvcctl("apply", "-f", str(path)).returncode == 0
    same = api.pvcctl("diff", "-f", str(path))
    assert (same.returncode, same.stdout) == (0, "")
    changed = write(files, "diff2.yaml", manifest("df-a", vcpus=2), manifest("df-new"))
    result = api.pvcctl("diff", "-f", str(changed))
    assert result.returncode == 1, result.stderr
    assert "--- live/virtualmachine/df-a" in result.stdout
    assert "-  vcpus: 1\n+  vcpus: 2" in result.stdout
    assert "--- /dev/null\n+++ applied/virtualmachine/df-new" in result.stdout
    assert api.http("GET", "/api/v1/vms/df-a").json()["spec"]["vcpus"] == 1
    bad = write(files, "bad.yaml", "kind: Nope\n")
    assert api.pvcctl("diff", "-f", str(bad)).returncode == 2
    down = api.pvcctl("diff", "-f", str(path), env={"PVC_SERVER": "http://127.0.0.1:9"})
    assert down.returncode == 3


def test_wait_times_out_with_exit_1_and_follows_the_watch(api: Api, files: Path) -> None:
    api.pvcctl("apply", "-f", str(write(files, "w.yaml", manifest("wt-a"))))
    timeout = api.pvcctl("wait", "vm/wt-a", "--for=condition=Ready", "--timeout=1s")
    assert timeout.returncode == 1
    assert "timed out after 1s" in one_line_error(timeout)
    waiter = subprocess.Popen(
        [PVCCTL, "wait", "vm/wt-a", "--for=condition=Ready", "--timeout=30s"],
        env=api.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    status = VirtualMachineStatus(
        phase=VMPhase.RUNNING,
        conditions=[Condition(type="Ready", status=ConditionStatus.TRUE, reason="Running")],
    )
    api.store.write_status(VirtualMachine, "wt-a", status)
    out, err = waiter.communicate(timeout=30)
    assert waiter.returncode == 0, err
    assert out.strip() == "vm/wt-a condition met"
    deleter = api.pvcctl("delete", "vm", "wt-a", "--wait", "--timeout=10s")
    assert deleter.returncode == 0, deleter.stderr
    gone = api.pvcctl("wait", "vm/wt-a", "--for=delete", "--timeout=5s")
    assert gone.returncode == 0, gone.stderr


def test_vm_verbs(api: Api, files: Path) -> None:
    for name in ("vn1", "vn2"):
        api.http(
            "POST",
            "/api/v1/nodes",
            json={"apiVersion": "pvc/v1", "kind": "Node", "metadata": {"name": name}},
        )
    api.pvcctl("apply", "-f", str(write(files, "v.yaml", manifest("vb-a"))))
    for verb, expect in (("stop", "Halted"), ("start", "Always")):
        result = api.pvcctl("vm", verb, "vb-a")
        assert result.returncode == 0 and result.stdout.strip() == f"vm/vb-a {verb} requested"
        assert api.http("GET", "/api/v1/vms/vb-a").json()["spec"]["runStrategy"] == expect
    assert api.pvcctl("vm", "restart", "vb-a").returncode == 0
    assert api.pvcctl("vm", "force-stop", "vb-a").returncode == 0
    annotations = api.http("GET", "/api/v1/vms/vb-a").json()["metadata"]["annotations"]
    assert {"pvc.io/restart", "pvc.io/force-stop"} <= set(annotations)
    # Forced live: refused at once where nothing runs to migrate, nothing written.
    refused = api.pvcctl("vm", "migrate", "vb-a", "--to", "vn2", "--live")
    assert refused.returncode == 1 and "cannot be live-migrated" in one_line_error(refused)
    assert api.store.read_placement("vb-a") is None
    migrated = api.pvcctl("vm", "migrate", "vb-a", "--to", "vn2")
    assert migrated.returncode == 0, migrated.stderr
    placement = api.store.read_placement("vb-a")
    assert placement is not None and (placement.node, placement.reason) == ("vn2", "migrate")
    bad = api.pvcctl("vm", "migrate", "vb-a", "--to", "ghost")
    assert bad.returncode == 2 and "does not exist" in one_line_error(bad)
    assert api.pvcctl("vm", "migrate", "vb-a").returncode == 2  # --to is required
    assert api.pvcctl("vm", "move", "vb-a", "--to", "vn1").returncode == 0
    assert api.http("GET", "/api/v1/vms/vb-a").json()["spec"]["placement"]["home"] == "vn1"
    missing = api.pvcctl("vm", "start", "ghost")
    assert missing.returncode == 1 and "not found" in one_line_error(missing)


def test_node_and_cluster_verbs(api: Api) -> None:
    api.http(
        "POST",
        "/api/v1/nodes",
        json={"apiVersion": "pvc/v1", "kind": "Node", "metadata": {"name": "nf1"}},
    )
    flushed = api.pvcctl("node", "flush", "nf1", "--wait", "--timeout=1s")
    # Nothing carries out flushes here: --wait must time out with a clear message, exit 1.
    assert flushed.returncode == 1
    assert flushed.stdout.strip() == "node/nf1 flush requested"
    assert "timed out after 1s waiting for node/nf1 domainState flushed" in one_line_error(flushed)
    assert api.http("GET", "/api/v1/nodes/nf1").json()["spec"]["drain"] is True
    api.store.write_status(Node, "nf1", NodeStatus(domain_state="ready"))
    ready = api.pvcctl("node", "ready", "nf1", "--wait", "--timeout=10s")
    assert ready.returncode == 0, ready.stderr
    assert api.pvcctl("node", "primary", "nf1").returncode == 0
    assert api.http("GET", "/api/v1/clusters/cluster").json()["spec"]["primary"] == "nf1"
    assert api.pvcctl("node", "secondary", "nf1").returncode == 0
    on = api.pvcctl("cluster", "maintenance", "on")
    assert (on.returncode, on.stdout.strip()) == (0, "cluster maintenance on")
    assert api.http("GET", "/api/v1/clusters/cluster").json()["spec"]["maintenance"] is True
    assert api.pvcctl("cluster", "maintenance", "maybe").returncode == 2


def test_describe_and_events_show_recent_events(api: Api, files: Path) -> None:
    api.pvcctl("apply", "-f", str(write(files, "e.yaml", manifest("ev-a"))))
    api.pvcctl("vm", "restart", "ev-a")
    described = api.pvcctl("describe", "vm", "ev-a")
    assert described.returncode == 0, described.stderr
    tail = described.stdout.split("Events:")[1]
    assert "RestartRequested" in tail and "Created" in tail
    events = api.pvcctl("events", "vm", "ev-a")
    assert events.stdout.splitlines()[0].split() == ["AGE", "TYPE", "REASON", "OBJECT", "MESSAGE"]
    assert "virtualmachine/ev-a" in events.stdout


def test_get_watch_prints_changes(api: Api, files: Path) -> None:
    watcher = subprocess.Popen(
        [PVCCTL, "get", "vms", "-w", "-l", "w=1", "--timeout=20s"],
        env=api.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert watcher.stderr is not None and watcher.stdout is not None
        assert watcher.stderr.readline().strip() == "No vms found."
        api.pvcctl("apply", "-f", str(write(files, "w.yaml", manifest("gw-a", {"w": "1"}))))
        # The watch starts from the list's resourceVersion: nothing after it is missed.
        assert watcher.stdout.readline().split()[:3] == ["ADDED", "gw-a", "Pending"]
        api.pvcctl("vm", "stop", "gw-a")
        assert watcher.stdout.readline().split()[:2] == ["MODIFIED", "gw-a"]
    finally:
        watcher.kill()
        watcher.wait()


def test_contexts_tokens_and_env_overrides(zookeeper: ZooKeeperServer, tmp_path: Path) -> None:
    token = "cli-admin-token-000111"
    settings = {"tokens": [{"token": token, "role": "admin"}]}
    for api in start_api(zookeeper, tmp_path, settings):
        config = tmp_path / "pvc" / "config.yaml"
        config.parent.mkdir(parents=True)
        config.write_text(
            yaml.safe_dump(
                {
                    "current-context": "broken",
                    "contexts": {
                        "good": {"server": api.url, "token": token},
                        "broken": {"server": "http://127.0.0.1:9"},
                        "anonymous": {"server": api.url},
                    },
                }
            )
        )
        env = {"PVC_SERVER": ""}
        assert api.pvcctl("get", "vms", env=env).returncode == 1  # current-context: unreachable
        good = api.pvcctl("--context", "good", "get", "vms", env=env)
        assert good.returncode == 0, good.stderr
        assert api.pvcctl("get", "vms", env={**env, "PVC_CONTEXT": "good"}).returncode == 0
        anonymous = api.pvcctl("--context", "anonymous", "get", "vms", env=env)
        assert anonymous.returncode == 1 and "(401 Unauthorized)" in one_line_error(anonymous)
        with_token = api.pvcctl(
            "--context", "anonymous", "get", "vms", env={**env, "PVC_TOKEN": token}
        )
        assert with_token.returncode == 0
        unknown = api.pvcctl("--context", "nope", "get", "vms", env=env)
        assert unknown.returncode == 2 and "context 'nope'" in one_line_error(unknown)


def test_shell_completion(api: Api) -> None:
    script = api.pvcctl(env={"_PVCCTL_COMPLETE": "bash_source"})
    assert script.returncode == 0 and "complete " in script.stdout
    words = api.pvcctl(
        env={"_PVCCTL_COMPLETE": "bash_complete", "COMP_WORDS": "pvcctl get ne", "COMP_CWORD": "2"}
    )
    assert "networks" in words.stdout
