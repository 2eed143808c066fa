"""pvcctl against a real pvcapid: manifests are checked as strictly as the server checks them,
and shell completion lists object names from the API."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from localcluster.zookeeper import ZooKeeperServer
from schemas import parse_resource
from tests.integration.cli.cli_fixture import Api, one_line_error, start_api


@pytest.fixture(scope="module")
def api(zookeeper: ZooKeeperServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    yield from start_api(zookeeper, tmp_path_factory.mktemp("home"))


def test_client_refuses_what_the_server_refuses(api: Api, tmp_path: Path) -> None:
    doc = {
        "apiVersion": "pvc/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": "lax-one"},
        "spec": {"memory": "256Mi", "vcpus": "2"},  # a string where the API takes an integer
    }
    assert parse_resource(doc).spec.vcpus == 2  # pydantic's lax mode would take it
    path = tmp_path / "lax.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    server = api.http("POST", "/api/v1/apply", params={"dryRun": "true"}, json=[doc])
    assert server.status_code == 422, server.text
    assert "spec.vcpus: Input should be a valid integer" in server.json()["message"]
    for dry_run in ("client", "none"):
        result = api.pvcctl("apply", "-f", str(path), f"--dry-run={dry_run}")
        assert result.returncode == 2, result.stdout
        error = one_line_error(result)
        assert f"{path}:7: spec.vcpus: Input should be a valid integer" in error, error
    assert api.http("GET", "/api/v1/vms/lax-one").status_code == 404
    doc["spec"]["vcpus"] = 2
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    checked = api.pvcctl("apply", "-f", str(path), "--dry-run=client")
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.strip() == "virtualmachine/lax-one checked (client dry run)"
    assert api.http("GET", "/api/v1/vms/lax-one").status_code == 404


def complete(api: Api, words: str) -> list[str]:
    """What the shell offers for ``words`` (click's bash protocol, as the script runs it)."""
    result = api.pvcctl(
        env={
            "_PVCCTL_COMPLETE": "bash_complete",
            "COMP_WORDS": words,
            "COMP_CWORD": str(len(words.split()) - (0 if words.endswith(" ") else 1)),
        }
    )
    assert result.returncode == 0 and not result.stderr, result.stderr
    return [line.split(",", 1)[1] for line in result.stdout.splitlines()]


def test_vm_verbs_complete_vm_names_from_the_api(api: Api) -> None:
    for name in ("tab-one", "tab-two"):
        doc = {
            "apiVersion": "pvc/v1",
            "kind": "VirtualMachine",
            "metadata": {"name": name},
            "spec": {"memory": "256Mi"},
        }
        assert api.http("POST", "/api/v1/vms", json=doc).status_code == 201
    names = api.http("GET", "/api/v1/names/vms").json()  # what completion reads: names only
    assert names == {"apiVersion": "pvc/v1", "kind": "NameList", "names": ["tab-one", "tab-two"]}
    assert complete(api, "pvcctl vm start ") == ["tab-one", "tab-two"]
    assert complete(api, "pvcctl vm migrate tab-t") == ["tab-two"]
    assert complete(api, "pvcctl get vms tab-o") == ["tab-one"]
