"""KIND NAME and KIND/NAME name the same object; mistakes are exit 2 with the reason."""

from __future__ import annotations

import pytest

from cli.common import split_target, split_targets
from cli.errors import InputError
from schemas import Node, VirtualMachine


def test_both_spellings_name_the_same_object() -> None:
    assert split_target("vm", "web1") == (VirtualMachine, "web1")
    assert split_target("vm/web1", None) == (VirtualMachine, "web1")
    assert split_target("VirtualMachine/web1", None) == (VirtualMachine, "web1")
    assert split_target("nodes", None) == (Node, None)


@pytest.mark.parametrize(
    ("kind", "name", "message"),
    [
        ("vm/", None, "a name goes after the '/'"),
        ("vm/web1", "web2", "not both"),
        ("flavour/x", None, "unknown kind 'flavour'"),
    ],
)
def test_mistakes_are_input_errors(kind: str, name: str | None, message: str) -> None:
    with pytest.raises(InputError, match=message) as info:
        split_target(kind, name)
    assert info.value.exit_code == 2


def test_many_targets() -> None:
    assert split_targets(("vm", "a", "b")) == [(VirtualMachine, "a"), (VirtualMachine, "b")]
    assert split_targets(("vm/a", "node/n1")) == [(VirtualMachine, "a"), (Node, "n1")]
    assert split_targets(()) == []
    for words in (("vm",), ("vm/a", "b")):
        with pytest.raises(InputError):
            split_targets(words)


def test_a_name_with_a_slash_is_refused() -> None:
    for call in (
        lambda: split_target("vm", "x/y"),
        lambda: split_target("vm/x/y", None),
        lambda: split_targets(("vm", "a", "x/y")),
        lambda: split_targets(("vm/a", "vm/x/y")),
    ):
        with pytest.raises(InputError, match="names hold no '/'"):
            call()
