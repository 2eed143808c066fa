"""A List (what get -o yaml|json prints) applies as its items; errors keep file:line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from cli.errors import InputError
from cli.manifests import load_all


def vm(name: str, memory: str = "1Gi") -> dict[str, object]:
    return {
        "apiVersion": "pvc/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": name},
        "spec": {"memory": memory},
    }


def test_lists_in_yaml_and_json_stand_for_their_items(tmp_path: Path) -> None:
    listed = {"apiVersion": "pvc/v1", "kind": "VirtualMachineList", "items": [vm("a"), vm("b")]}
    as_yaml = tmp_path / "l.yaml"
    as_yaml.write_text(yaml.safe_dump(listed, sort_keys=False) + "---\n" + yaml.safe_dump(vm("c")))
    as_json = tmp_path / "l.json"
    as_json.write_text(json.dumps({**listed, "kind": "List", "items": [vm("d")]}, indent=2))
    names = [o.resource.name for o in load_all((str(as_yaml), str(as_json)))]
    assert names == ["a", "b", "c", "d"]


def test_an_error_inside_a_list_names_its_line(tmp_path: Path) -> None:
    listed = {"apiVersion": "pvc/v1", "kind": "List", "items": [vm("a"), vm("b", "lots")]}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(listed, sort_keys=False))
    line = path.read_text().splitlines().index("    memory: lots") + 1
    with pytest.raises(InputError, match=f"{path}:{line}: spec.memory"):
        load_all((str(path),))
