"""pvcctl explain: a kind's fields from the schemas' docstrings, with type and default."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cli.errors import InputError
from cli.explain import _complete_targets, explain

PVCCTL = str(Path(sys.executable).parent / "pvcctl")


def test_a_kind_lists_its_top_fields_and_says_what_it_is() -> None:
    text = explain("vm")
    assert text.startswith("KIND:     VirtualMachine\nVERSION:  pvc/v1\n")
    assert "what a user asks to run" in text
    for line in ("   spec  <object (VirtualMachineSpec)> -required-", "   apiVersion  <string>"):
        assert line in text.splitlines()


def test_fields_show_type_default_and_their_docstring() -> None:
    text = explain("virtualmachine.spec.migration")
    assert "FIELD:    spec.migration <object (VMMigration)>" in text
    assert "   maxDowntime  <duration>" in text
    assert "The longest pause of the guest" in text and 'default "300ms"' in text
    leaf = explain("vm.spec.disks.size")
    assert "FIELD:    spec.disks.size <size>" in leaf
    assert "A new volume of this size" in leaf and "FIELDS:" not in leaf
    assert "<one of virtio, e1000, rtl8139>" in explain("vm.spec.nics")
    assert "metadata.labels <map of string to string>" in explain("vm.metadata.labels")


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("vm.spec.nope", "VirtualMachine.spec has no field 'nope'; its fields: vcpus, memory"),
        ("vm.spec.memory.unit", "VirtualMachine.spec.memory is a size: it has no fields"),
        ("flavour", "unknown kind 'flavour'"),
    ],
)
def test_unknown_fields_name_the_valid_ones(target: str, message: str) -> None:
    with pytest.raises(InputError, match=message) as info:
        explain(target)
    assert info.value.exit_code == 2


def test_the_command_exits_2_with_one_line_and_completes_fields() -> None:
    result = subprocess.run(
        [PVCCTL, "explain", "node.spec.nope"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("error: Node.spec has no field 'nope'; its fields: ")
    assert len(result.stderr.splitlines()) == 1
    words = [c.value for c in _complete_targets(None, None, "vm.spec.mi")]  # type: ignore[arg-type]
    assert words == ["vm.spec.migration"]
    assert [c.value for c in _complete_targets(None, None, "vm.nope.x")] == []  # type: ignore[arg-type]
