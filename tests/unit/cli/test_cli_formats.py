"""-o jsonpath / custom-columns, --sort-by, -L, and describe showing user text as it is."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from rich.console import Console

from cli.errors import InputError
from cli.jsonpath import compile_path, compile_template
from cli.output import console, describe, parse_format, render, render_events, sort_items


def vm(name: str, memory: str, node: str | None = None, **labels: str) -> dict[str, Any]:
    return {
        "apiVersion": "pvc/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": name, "labels": labels},
        "spec": {"vcpus": 1, "memory": memory},
        "status": {
            "phase": "Running",
            "node": node,
            "conditions": [{"type": "Ready", "status": "True", "reason": "Running"}],
        },
    }


LIST = {
    "apiVersion": "pvc/v1",
    "kind": "VirtualMachineList",
    "items": [vm("a", "1Gi", "n1", app="web"), vm("b", "512Mi", "n2")],
}


def test_jsonpath_templates_as_kubectl_prints_them() -> None:
    def run(template: str) -> str:
        return compile_template(template).render(LIST)

    assert run("{.items[*].metadata.name}") == "a b"
    assert run('{range .items[*]}{.metadata.name}{"\\t"}{.status.node}{"\\n"}{end}') == (
        "a\tn1\nb\tn2\n"
    )
    assert run("{.kind}: {$.items[0].spec.memory}") == "VirtualMachineList: 1Gi"
    assert run('{.items[0].status.conditions[?(@.type=="Ready")].reason}') == "Running"
    assert run("{.items[0].spec}") == '{"vcpus":1,"memory":"1Gi"}'
    assert run("{.items[*].metadata.labels.app}") == "web"
    assert run("{.nothing.here}") == ""  # missing is empty, as kubectl's get prints it


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{.items[", "unclosed action"),
        ("{range .items[*]}{.x}", "without its {end}"),
        ("{.x}{end}", "{end} without a {range}"),
        ("{}", "empty action"),
        ("{.items[?(@.x==]}", "invalid JSONPath"),
        ("{range}", "needs a path"),
    ],
)
def test_bad_templates_are_input_errors(template: str, message: str) -> None:
    with pytest.raises(InputError, match=message.replace("{", r"\{").replace("}", r"\}")):
        parse_format(f"jsonpath={template}")


def test_format_words() -> None:
    assert parse_format("wide").name == "wide"
    for bad in ("xml", "custom-columns=NAME", "custom-columns=:.a", "jsonpath"):
        with pytest.raises(InputError):
            parse_format(bad)


def rendered(items: list[dict[str, Any]], fmt: str, labels: tuple[str, ...] = ()) -> list[str]:
    buffer = io.StringIO()
    render("VirtualMachine", items, parse_format(fmt), Console(file=buffer), labels)
    return buffer.getvalue().splitlines()


def test_custom_columns_and_label_columns() -> None:
    lines = rendered(
        LIST["items"], "custom-columns=NAME:.metadata.name,MEM:{.spec.memory},X:.status.nope"
    )
    assert [line.split() for line in lines] == [
        ["NAME", "MEM", "X"],
        ["a", "1Gi", "<none>"],
        ["b", "512Mi", "<none>"],
    ]
    header, first, second = rendered(LIST["items"], "table", ("app", "example.io/tier"))
    assert header.split()[-2:] == ["APP", "TIER"]
    assert first.split()[-1] == "web" and second.split()[-1] != "web"


def test_sort_by_numbers_sizes_text_and_missing_last() -> None:
    items = [vm("c", "1Gi"), vm("a", "512Mi", "n2"), vm("b", "2Gi", "n1")]
    by = compile_path
    assert [i["metadata"]["name"] for i in sort_items(items, by(".spec.memory"))] == [
        "a",
        "c",
        "b",
    ]
    assert [i["metadata"]["name"] for i in sort_items(items, by("{.status.node}"))] == [
        "b",
        "a",
        "c",
    ]
    assert [i["metadata"]["name"] for i in sort_items(items, by(".metadata.name"))] == [
        "a",
        "b",
        "c",
    ]


def test_describe_shows_user_text_literally() -> None:
    obj = vm("web1", "1Gi", "n1", env="[prod]", note="[/bold]")
    obj["metadata"]["annotations"] = {"mac": "52:54:00:ab:cd:ef", "x": "[red]hot[/red]"}
    obj["status"]["conditions"][0]["message"] = "moved [/] to :ab: [bold]now"
    out = console()
    buffer = io.StringIO()
    out.file = buffer
    describe(obj, out)
    event = {"involvedObject": {"kind": "VirtualMachine", "name": "web1"}, "message": "[/x]"}
    render_events([{**event, "reason": "Started", "type": "Normal"}], out)
    text = buffer.getvalue()
    for shown in (
        "env=[prod]",
        "note=[/bold]",
        "mac=52:54:00:ab:cd:ef",
        "x=[red]hot[/red]",
        "moved [/] to :ab: [bold]now",
        "[/x]",
    ):
        assert shown in text, text


def test_a_path_that_fails_on_the_data_is_an_input_error() -> None:
    path = compile_path(".spec.memory")
    with (
        mock.patch.object(type(path.compiled), "find", side_effect=TypeError("odd data")),
        pytest.raises(InputError, match=r"cannot evaluate JSONPath '\.spec\.memory': odd data"),
    ):
        path.find({}, {})


def test_a_bad_format_fails_before_any_request() -> None:
    """Exit 2 with the server unreachable: the template was refused before asking it."""
    result = subprocess.run(
        [str(Path(sys.executable).parent / "pvcctl"), "get", "vms", "-o", "jsonpath={.items["],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PVC_SERVER": "http://127.0.0.1:9", "XDG_CONFIG_HOME": "/nonexistent"},
    )
    assert result.returncode == 2
    assert result.stderr.startswith("error: unclosed action in template '{.items['")
    assert len(result.stderr.splitlines()) == 1
