"""What `pvcctl cluster restore FILE` reads from FILE: YAML or JSON documents (a List stands
for its items); a missing, empty or unreadable file is an input error (exit 2) before any
request."""

from __future__ import annotations

from pathlib import Path

import pytest

from cli.data_commands import read_documents
from cli.errors import InputError


def test_documents_and_lists_spread_out(tmp_path: Path) -> None:
    saved = tmp_path / "b.yaml"
    saved.write_text(
        "# a comment\n---\nkind: Cluster\nmetadata: {name: cluster}\n---\n"
        "kind: List\nitems: [{kind: Node, metadata: {name: n1}}]\n---\n"
    )
    assert [d["kind"] for d in read_documents(str(saved))] == ["Cluster", "Node"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (None, "no such file"),
        ("", "no objects in it"),
        ("kind: [unclosed", "not YAML or JSON"),
        ("- just\n- a list\n", "is not an object"),
    ],
)
def test_bad_files_are_input_errors(tmp_path: Path, text: str | None, message: str) -> None:
    path = tmp_path / "b.yaml"
    if text is not None:
        path.write_text(text)
    with pytest.raises(InputError, match=message) as raised:
        read_documents(str(path))
    assert raised.value.exit_code == 2
