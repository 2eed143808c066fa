"""pvcctl get over thousands of VMs against a real pvcapid: the fast paths (the API's cached
JSON per object, orjson in pvcctl) keep the output exact."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from localcluster.zookeeper import ZooKeeperServer
from tests.helpers import wait_for
from tests.integration.cli.cli_fixture import Api, start_api


@pytest.fixture(scope="module")
def api(zookeeper: ZooKeeperServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    yield from start_api(zookeeper, tmp_path_factory.mktemp("home"))


def vm(name: str, index: int) -> dict[str, object]:
    return {
        "apiVersion": "pvc/v1",
        "kind": "VirtualMachine",
        "metadata": {
            "name": name,
            "labels": {"suite": "bulk"},
            "annotations": {"note": "café"} if index == 7 else {},
            "uid": f"00000000-0000-4000-8000-{index:012d}",
            "generation": 1,
            "creationTimestamp": "2026-01-01T00:00:00.000000Z",
        },
        "spec": {"memory": "64Mi", "vcpus": 1},
    }


def test_get_over_thousands_of_vms_is_exact_as_json_and_as_a_table(api: Api) -> None:
    """Big lists take the fast paths (the API joins each object's cached JSON text, pvcctl
    decodes and indents with orjson): what comes out is still exactly what the API holds,
    byte for byte as the standard library would indent it, non-ASCII text included."""
    count = 1000
    root = api.store.path("/resources/vms")
    names = [f"bulk-{i:04d}" for i in range(count)]
    pending = []
    for i, name in enumerate(names):
        data = json.dumps(vm(name, i)).encode()
        pending.append(api.store.client.create_async(f"{root}/{name}", data))
    for result in pending:
        result.get()
    path = "/api/v1/vms?labelSelector=suite%3Dbulk"
    wait_for(lambda: len(api.http("GET", path).json()["items"]) == count, 30, "the cache", 0.5)
    listed = api.http("GET", path).json()

    as_json = api.pvcctl("get", "vms", "-l", "suite=bulk", "-o", "json")
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout) == listed
    assert as_json.stdout == json.dumps(listed, indent=2) + "\n"
    assert "caf\\u00e9" in as_json.stdout

    table = api.pvcctl("get", "vms", "-l", "suite=bulk").stdout.splitlines()
    assert table[0].split()[:3] == ["NAME", "PHASE", "NODE"]
    assert [line.split()[0] for line in table[1:]] == names
