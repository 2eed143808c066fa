"""pvcctl edit, patch, label, annotate and version through the real binary against a real
pvcapid.

The editor is a small script (EDITOR), as a user's would be: it rewrites the file it is given.
"""

from __future__ import annotations

import json
import re
import stat
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from localcluster.zookeeper import ZooKeeperServer
from schemas import Node, NodeStatus
from schemas.version import pvc_version
from tests.integration.cli.cli_fixture import Api, manifest, one_line_error, start_api


@pytest.fixture(scope="module")
def api(zookeeper: ZooKeeperServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    yield from start_api(zookeeper, tmp_path_factory.mktemp("home"))


def create(api: Api, name: str, labels: dict[str, str] | None = None) -> None:
    response = api.http(
        "POST",
        "/api/v1/vms",
        content=manifest(name, labels),
        headers={"Content-Type": "application/yaml"},
    )
    assert response.status_code == 201, response.text


def vm(api: Api, name: str) -> Any:
    return api.http("GET", f"/api/v1/vms/{name}").json()


def editor(tmp_path: Path, body: str) -> dict[str, str]:
    """EDITOR set to a script that runs ``body`` (sh) on the file as $1."""
    script = tmp_path / "editor.sh"
    script.write_text(f"#!/bin/sh\nset -e\n{body}\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return {"EDITOR": str(script), "VISUAL": ""}


def test_edit_applies_what_the_user_saved(api: Api, tmp_path: Path) -> None:
    create(api, "ed-a")
    seen = tmp_path / "seen.yaml"
    env = editor(tmp_path, f'cp "$1" {seen}\nsed -i "s/vcpus: 1/vcpus: 3/" "$1"')
    result = api.pvcctl("edit", "vm/ed-a", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "vm/ed-a edited"
    assert vm(api, "ed-a")["spec"]["vcpus"] == 3
    shown = seen.read_text()
    assert "status:" not in shown and "resourceVersion" in shown and "vcpus: 1" in shown
    # VISUAL wins over EDITOR; an unchanged file writes nothing.
    untouched = editor(tmp_path, "true")
    version = vm(api, "ed-a")["metadata"]["resourceVersion"]
    env = {"EDITOR": "false", "VISUAL": untouched["EDITOR"]}
    cancelled = api.pvcctl("edit", "vm", "ed-a", env=env)
    assert cancelled.returncode == 0, cancelled.stderr
    assert cancelled.stdout.strip() == "Edit cancelled, no changes made"
    assert vm(api, "ed-a")["metadata"]["resourceVersion"] == version


def test_edit_conflict_keeps_the_users_edit(api: Api, tmp_path: Path) -> None:
    create(api, "ed-b")
    # Someone else changes it while the editor is open.
    other = (
        f"import httpx; httpx.patch('{api.url}/api/v1/vms/ed-b', json={{'spec': {{'vcpus': 2}}}}, "
        "headers={'Content-Type': 'application/merge-patch+json'}).raise_for_status()"
    )
    body = f'sed -i "s/vcpus: 1/vcpus: 4/" "$1"\n{sys.executable} -c "{other}"'
    result = api.pvcctl("edit", "vm", "ed-b", env=editor(tmp_path, body))
    assert result.returncode == 1
    message = one_line_error(result)
    assert "vm/ed-b was changed by someone else since it was read" in message
    kept = Path(re.findall(r"kept in (\S+)$", message)[0])
    assert "vcpus: 4" in kept.read_text()
    assert vm(api, "ed-b")["spec"]["vcpus"] == 2
    kept.unlink()


def test_edit_bad_input_changes_nothing(api: Api, tmp_path: Path) -> None:
    create(api, "ed-c")
    version = vm(api, "ed-c")["metadata"]["resourceVersion"]
    for body, words in (
        ('echo "spec: [" >> "$1"', "invalid YAML"),
        ('sed -i "s/name: ed-c/name: other/" "$1"', "cannot change"),
        ('sed -i "s/vcpus: 1/vcpus: 9999/" "$1"', "kept in"),
        ("exit 3", "the editor exited with 3"),
    ):
        result = api.pvcctl("edit", "vm/ed-c", env=editor(tmp_path, body))
        assert result.returncode in (1, 2), result.stderr
        assert words in one_line_error(result)
    assert vm(api, "ed-c")["metadata"]["resourceVersion"] == version
    assert api.pvcctl("edit", "vm/nope", env=editor(tmp_path, "true")).returncode == 1


def test_patch_merges(api: Api) -> None:
    create(api, "pa-a", {"app": "x"})
    result = api.pvcctl("patch", "vm", "pa-a", "-p", '{"spec": {"vcpus": 2}}')
    assert result.returncode == 0 and result.stdout.strip() == "vm/pa-a patched", result.stderr
    yaml_patch = api.pvcctl("patch", "vm/pa-a", "-p", "metadata: {labels: {app: null, t: y}}")
    assert yaml_patch.returncode == 0, yaml_patch.stderr
    got = vm(api, "pa-a")
    assert got["spec"]["vcpus"] == 2 and got["metadata"]["labels"] == {"t": "y"}
    again = api.pvcctl("patch", "vm/pa-a", "-p", json.dumps({"spec": {"vcpus": 2}}))
    assert again.stdout.strip() == "vm/pa-a patched (no change)"
    for bad in ("[1, 2]", "{", '{"spec": {"vcpus": 0}}'):
        refused = api.pvcctl("patch", "vm/pa-a", "-p", bad)
        assert refused.returncode == 2, refused.stderr
        one_line_error(refused)
    assert vm(api, "pa-a")["spec"]["vcpus"] == 2


def test_label_and_annotate_like_kubectl(api: Api) -> None:
    create(api, "la-a", {"app": "x"})
    added = api.pvcctl("label", "vm", "la-a", "tier=web", "env=prod")
    assert added.returncode == 0 and added.stdout.strip() == "vm/la-a labeled", added.stderr
    taken = api.pvcctl("label", "vm/la-a", "app=y")
    assert taken.returncode == 1
    assert "already has app='x'; --overwrite changes it" in one_line_error(taken)
    assert api.pvcctl("label", "vm/la-a", "app=y", "env-", "--overwrite").returncode == 0
    labels = vm(api, "la-a")["metadata"]["labels"]
    assert labels == {"app": "y", "tier": "web"}
    same = api.pvcctl("label", "vm/la-a", "app=y")
    assert same.returncode == 0 and same.stdout.strip() == "vm/la-a not labeled"
    note = api.pvcctl("annotate", "vm/la-a", "owner=ops team")
    assert note.returncode == 0 and note.stdout.strip() == "vm/la-a annotated"
    assert api.pvcctl("annotate", "vm/la-a", "owner=me").returncode == 1
    assert api.pvcctl("annotate", "vm/la-a", "owner-").returncode == 0
    assert "owner" not in vm(api, "la-a")["metadata"].get("annotations", {})
    for bad in (("vm/la-a", "oops"), ("vm/la-a",), ("vm", "la-a", "=x"), ("vm/la-a", "a=1", "a-")):
        refused = api.pvcctl("label", *bad)
        assert refused.returncode == 2, refused.stderr
        one_line_error(refused)
    assert vm(api, "la-a")["metadata"]["labels"] == labels


def test_version_of_client_server_and_each_node(api: Api) -> None:
    for name in ("vv1", "vv2"):
        node = {"apiVersion": "pvc/v1", "kind": "Node", "metadata": {"name": name}}
        assert api.http("POST", "/api/v1/nodes", json=node).status_code == 201
    api.store.write_status(Node, "vv1", NodeStatus(daemon_version="9.9.9"))
    result = api.pvcctl("version")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:2] == [f"Client: {pvc_version()}", f"Server: {pvc_version()} (pvc/v1)"]
    assert "Node vv1: 9.9.9" in lines and "Node vv2: unknown" in lines
    report = json.loads(api.pvcctl("version", "-o", "json").stdout)
    assert report["nodes"]["vv1"] == "9.9.9" and report["apiVersion"] == "pvc/v1"
    away = api.pvcctl("version", env={"PVC_SERVER": "http://127.0.0.1:9"})
    assert away.returncode == 1 and away.stdout == f"Client: {pvc_version()}\n"
    assert "cannot reach the PVC API" in one_line_error(away)
    assert (
        api.pvcctl("version", "--client", env={"PVC_SERVER": "http://127.0.0.1:9"}).returncode == 0
    )
