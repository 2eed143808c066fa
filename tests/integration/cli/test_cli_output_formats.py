"""pvcctl's output against a real pvcapid: Lists, templates, columns, sorting, labels,
KIND/NAME, describe showing user text literally, and name completion."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
import yaml

from cli.completion import complete_names
from cli.main import cli
from localcluster.zookeeper import ZooKeeperServer
from tests.integration.cli.cli_fixture import Api, one_line_error, start_api

MAC = "52:54:00:ab:cd:ef"


def vm(name: str, memory: str, labels: dict[str, str]) -> dict[str, object]:
    return {
        "apiVersion": "pvc/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": name, "labels": labels},
        "spec": {"memory": memory, "vcpus": 1},
    }


@pytest.fixture(scope="module")
def api(zookeeper: ZooKeeperServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    for started in start_api(zookeeper, tmp_path_factory.mktemp("home")):
        docs = [
            vm("of-big", "2Gi", {"suite": "of", "tier": "[prod]"}),
            vm("of-small", "512Mi", {"suite": "of", "note": "[/bold]"}),
            vm("of-mid", "1Gi", {"suite": "of"}),
        ]
        docs[0]["spec"]["nics"] = [{"network": "lan", "mac": MAC}]  # type: ignore[index]
        network = {
            "apiVersion": "pvc/v1",
            "kind": "Network",
            "metadata": {"name": "lan"},
            "spec": {"type": "bridged", "vlan": 10},
        }
        body = yaml.safe_dump_all([network, *docs])
        answer = started.http(
            "POST", "/api/v1/apply", content=body, headers={"content-type": "application/yaml"}
        )
        assert answer.status_code == 200, answer.text
        yield started


def test_json_and_yaml_are_the_object_or_always_a_list(api: Api, tmp_path: Path) -> None:
    one = api.pvcctl("get", "vm/of-big", "-o", "json")
    assert one.returncode == 0, one.stderr
    assert json.loads(one.stdout) == api.http("GET", "/api/v1/vms/of-big").json()
    assert MAC in one.stdout
    listed = json.loads(api.pvcctl("get", "vms", "-l", "suite=of,tier", "-o", "json").stdout)
    assert (listed["kind"], len(listed["items"])) == ("VirtualMachineList", 1)
    empty = json.loads(api.pvcctl("get", "vms", "-l", "suite=none", "-o", "json").stdout)
    assert (empty["kind"], empty["items"]) == ("VirtualMachineList", [])
    both = yaml.safe_load(api.pvcctl("get", "vms,networks", "-l", "suite=of", "-o", "yaml").stdout)
    assert both["kind"] == "List" and len(both["items"]) == 3
    # What get -o yaml printed applies as it is: the List stands for its items.
    saved = tmp_path / "set.yaml"
    saved.write_text(api.pvcctl("get", "vms", "-l", "suite=of", "-o", "yaml").stdout)
    assert MAC in saved.read_text()
    applied = api.pvcctl("apply", "-f", str(saved))
    assert applied.returncode == 0, applied.stderr
    assert applied.stdout.split().count("unchanged") == 3


def test_readme_round_trip_get_delete_apply(api: Api, tmp_path: Path) -> None:
    saved = tmp_path / "one.yaml"
    saved.write_text(api.pvcctl("get", "vm", "of-mid", "-o", "yaml").stdout)
    assert api.pvcctl("delete", "vm/of-mid").returncode == 0
    applied = api.pvcctl("apply", "-f", str(saved))
    assert applied.returncode == 0, applied.stderr
    assert "created" in applied.stdout
    again = api.http("GET", "/api/v1/vms/of-mid")
    assert again.status_code == 200 and again.json()["spec"]["memory"] == "1Gi"


def test_jsonpath_custom_columns_sort_by_and_label_columns(api: Api) -> None:
    names = api.pvcctl(
        "get", "vms", "-l", "suite=of", "--sort-by=.spec.memory", "-o",
        "jsonpath={.items[*].metadata.name}",
    )  # fmt: skip
    assert (names.returncode, names.stdout) == (0, "of-small of-mid of-big")
    ranged = api.pvcctl(
        "get", "vm/of-big", "-o", 'jsonpath={.spec.memory}{"\\n"}{.spec.nics[0].mac}'
    )
    assert ranged.stdout == f"2Gi\n{MAC}"
    columns = api.pvcctl(
        "get", "vms", "-l", "suite=of", "--sort-by", "{.metadata.name}",
        "-o", "custom-columns=NAME:.metadata.name,MEM:.spec.memory,TIER:.metadata.labels.tier",
    )  # fmt: skip
    assert [line.split() for line in columns.stdout.splitlines()] == [
        ["NAME", "MEM", "TIER"],
        ["of-big", "2Gi", "[prod]"],
        ["of-mid", "1Gi", "<none>"],
        ["of-small", "512Mi", "<none>"],
    ]
    labelled = api.pvcctl("get", "vms", "-l", "suite=of", "-L", "tier,note", "--sort-by=.x")
    header, *rows = labelled.stdout.splitlines()
    assert header.split()[-2:] == ["TIER", "NOTE"]
    assert any(r.split()[0] == "of-big" and r.endswith("[prod]") for r in rows)
    assert any(r.split()[0] == "of-small" and r.endswith("[/bold]") for r in rows)
    for bad in (
        ("-o", "jsonpath={.items["),
        ("-o", "jsonpath={range .items[*]}"),
        ("-o", "custom-columns=NAME"),
        ("-o", "xml"),
        ("--sort-by", ".items[?(@.x==]"),
    ):
        result = api.pvcctl("get", "vms", *bad)
        assert result.returncode == 2, (bad, result.stderr)
        assert "Traceback" not in result.stderr
        one_line_error(result)


def test_type_slash_name_and_describe_shows_labels_literally(api: Api) -> None:
    described = api.pvcctl("describe", "vm/of-big")
    assert described.returncode == 0, described.stderr
    assert "tier=[prod]" in described.stdout
    assert (
        api.pvcctl("describe", "vm", "of-big").stdout.split("Events:")[0]
        == (described.stdout.split("Events:")[0])
    )
    crash = api.pvcctl("describe", "virtualmachine/of-small")
    assert crash.returncode == 0, crash.stderr
    assert "note=[/bold]" in crash.stdout
    events = api.pvcctl("events", "vm/of-big")
    assert events.returncode == 0 and "virtualmachine/of-big" in events.stdout
    both = api.pvcctl("get", "vm/of-big", "of-small")
    assert both.returncode == 2 and "not both" in one_line_error(both)
    assert api.pvcctl("describe", "vm/").returncode == 2
    assert api.pvcctl("delete", "vm/of-big", "of-small").returncode == 2
    assert api.http("GET", "/api/v1/vms/of-big").status_code == 200


def _complete(server: str, kind: str, incomplete: str) -> list[str]:
    with click.Context(cli, info_name="pvcctl") as root:
        root.params = {"server": server, "context_name": None, "token": None}
        root.params["config_path"] = None
        get = cli.get_command(root, "get")  # imported on first use (cli.lazygroup)
        assert get is not None
        with click.Context(get, parent=root, info_name="get") as ctx:
            ctx.params = {"kinds": kind}
            param = next(p for p in get.params if p.name == "name")
            return [item.value for item in complete_names(ctx, param, incomplete)]


def test_name_completion_is_one_quick_get_and_quiet_without_a_server(api: Api) -> None:
    _complete(api.url, "vm", "")  # warm up: the first request opens the connection pool
    started = time.monotonic()
    names = _complete(api.url, "vm", "of-")
    took = time.monotonic() - started
    assert names == ["of-big", "of-mid", "of-small"]
    assert took < 0.5, f"completion took {took:.2f}s"
    assert _complete("http://127.0.0.1:9", "vm", "") == []
    assert _complete(api.url, "flavour", "") == []
    shell = api.pvcctl(
        env={
            "_PVCCTL_COMPLETE": "bash_complete",
            "COMP_WORDS": "pvcctl describe vm/of-s",
            "COMP_CWORD": "2",
        }
    )
    assert shell.returncode == 0 and "vm/of-small" in shell.stdout, shell.stderr
    down = api.pvcctl(
        env={
            "_PVCCTL_COMPLETE": "bash_complete",
            "COMP_WORDS": "pvcctl get vm ",
            "COMP_CWORD": "3",
            "PVC_SERVER": "http://127.0.0.1:9",
        }
    )
    assert down.returncode == 0 and down.stdout.strip() == "" and not down.stderr
