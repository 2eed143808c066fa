"""Multi-document manifests: what loads, and errors that point at file, line and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from schemas import Cluster, ManifestError, Network, VirtualMachine, load_manifests

VM_WEB = """\
apiVersion: pvc/v1
kind: VirtualMachine
metadata:
  name: web
spec:
  memory: 1Gi
"""


def load_error(text: str, source: str = "site.yaml") -> ManifestError:
    with pytest.raises(ManifestError) as info:
        load_manifests(text, source)
    return info.value


def test_multi_document_yaml_skips_empty_documents_and_keeps_order() -> None:
    text = (
        "---\n"
        "# only a comment\n"
        "---\n" + VM_WEB + "---\n"
        "---\n"
        "apiVersion: pvc/v1\n"
        "kind: Network\n"
        "metadata: {name: lan}\n"
        "spec: {type: bridged, vlan: 100}\n"
        "---\n"
        "apiVersion: pvc/v1\n"
        "kind: Cluster\n"
        "metadata: {name: cluster}\n"
        "...\n"
    )
    loaded = load_manifests(text, "site.yaml")
    assert [type(o.resource) for o in loaded] == [VirtualMachine, Network, Cluster]
    assert [o.resource.name for o in loaded] == ["web", "lan", "cluster"]
    assert [o.line for o in loaded] == [4, 12, 17]
    assert {o.source for o in loaded} == {"site.yaml"}


def test_an_empty_file_loads_nothing() -> None:
    assert load_manifests("", "empty.yaml") == []
    assert load_manifests("---\n---\n# nothing\n", "empty.yaml") == []


def test_bad_yaml_syntax_names_file_and_line() -> None:
    text = VM_WEB + "  vcpus: [1, 2\n  autostart: true\n"
    err = load_error(text)
    assert str(err).startswith("site.yaml:")
    assert "invalid YAML" in str(err)
    assert err.line is not None and err.line >= 7


def test_bad_yaml_syntax_on_an_exact_line() -> None:
    text = "apiVersion: pvc/v1\nkind: VirtualMachine\nmetadata:\n  name: web\n   bad: indent\n"
    err = load_error(text)
    assert err.line == 5
    assert str(err).startswith("site.yaml:5: invalid YAML")


def test_unknown_kind_points_at_the_kind_line() -> None:
    text = "apiVersion: pvc/v1\nmetadata:\n  name: web\nkind: Pod\n"
    err = load_error(text)
    assert (err.line, err.field) == (4, "kind")
    assert str(err).startswith("site.yaml:4: kind: unknown kind 'Pod'")


def test_unknown_field_points_at_the_line_of_that_field() -> None:
    text = VM_WEB + "  vcpus: 2\n  cpuModel: host\n"
    err = load_error(text)
    assert (err.line, err.field) == (8, "spec.cpuModel")
    assert str(err) == "site.yaml:8: spec.cpuModel: unknown field"


def test_negative_memory_points_at_the_memory_line() -> None:
    text = VM_WEB.replace("memory: 1Gi", "vcpus: 2\n  memory: -1Gi")
    err = load_error(text)
    assert (err.line, err.field) == (7, "spec.memory")
    assert "invalid size '-1Gi'" in str(err)
    assert str(err).startswith("site.yaml:7: spec.memory: ")


def test_bad_name_points_at_the_name_line() -> None:
    text = VM_WEB.replace("name: web", "labels: {app: web}\n  name: Web_1")
    err = load_error(text)
    assert (err.line, err.field) == (5, "metadata.name")
    assert str(err).startswith("site.yaml:5: metadata.name: invalid name 'Web_1'")


def test_wrong_api_version_points_at_its_line() -> None:
    text = "kind: VirtualMachine\napiVersion: v1\nmetadata: {name: web}\nspec: {memory: 1Gi}\n"
    err = load_error(text)
    assert (err.line, err.field) == (2, "apiVersion")
    assert "unsupported apiVersion 'v1'" in str(err)


def test_error_in_a_later_document_counts_lines_from_the_top_of_the_file() -> None:
    text = VM_WEB + "---\n" + VM_WEB.replace("web", "db").replace("1Gi", "1.5Gi")
    err = load_error(text)
    assert (err.line, err.field) == (13, "spec.memory")


def test_error_in_a_list_item_names_its_index_and_line() -> None:
    text = VM_WEB + (
        "  disks:\n"
        "    - name: root\n"
        "      size: 10Gi\n"
        "    - name: data\n"
        "      size: 1Gi\n"
        "      sizze: 2Gi\n"
    )
    err = load_error(text)
    assert (err.line, err.field) == (12, "spec.disks[1].sizze")


@pytest.mark.parametrize(
    ("body", "what"),
    [("- apiVersion: pvc/v1\n- kind: VirtualMachine\n", "list"), ("just words\n", "str")],
)
def test_a_document_that_is_not_a_mapping_is_rejected_with_its_line(body: str, what: str) -> None:
    err = load_error(VM_WEB + "---\n" + body)
    assert err.line == 8
    assert str(err) == f"site.yaml:8: expected an object (a mapping), got {what}"


def test_several_errors_in_one_object_say_how_many_more() -> None:
    text = VM_WEB.replace("memory: 1Gi", "memory: 0\n  vcpus: 0\n  turbo: true")
    assert "(and 2 more)" in str(load_error(text))


def test_nothing_is_returned_when_any_document_is_bad() -> None:
    with pytest.raises(ManifestError):
        load_manifests(VM_WEB + "---\nkind: Pod\napiVersion: pvc/v1\n", "x.yaml")


def test_default_source_is_stdin() -> None:
    assert str(load_error("kind: Pod\n", source="<stdin>")).startswith("<stdin>:1: kind:")


def test_the_example_manifests_all_load(repo_root: Path) -> None:
    files = sorted((repo_root / "manifests").glob("*.yaml"))
    assert files, "manifests/ has no examples"
    kinds = set()
    for path in files:
        loaded = load_manifests(path.read_text(), str(path))
        assert loaded, f"{path.name} holds no object"
        kinds |= {o.resource.KIND for o in loaded}
    assert {"Cluster", "VirtualMachine"} <= kinds
