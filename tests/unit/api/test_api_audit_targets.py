"""What the audit records a write as: its verb and object, from the method and path."""

from __future__ import annotations

import json

import pytest

from api.audit import Target, objects_in_answer, target_of


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("POST", "/api/v1/apply", Target("apply", None, None, True)),
        ("POST", "/api/v1/restore", Target("restore", None, None, True)),
        ("POST", "/api/v1/vms", Target("create", "VirtualMachine", None, True)),
        ("PUT", "/api/v1/nodes/n1", Target("replace", "Node", "n1", False)),
        ("PATCH", "/api/v1/vms/web1", Target("patch", "VirtualMachine", "web1", False)),
        ("DELETE", "/api/v1/storagepools/p", Target("delete", "StoragePool", "p", False)),
        ("POST", "/api/v1/vms/web1/rename", Target("rename", "VirtualMachine", "web1", False)),
        ("POST", "/api/v1/nodes/n1/flush", Target("flush", "Node", "n1", False)),
        (
            "POST",
            "/api/v1/clusters/cluster/maintenance",
            Target("maintenance", "Cluster", "cluster", False),
        ),
        ("DELETE", "/api/v1/flavours/x", Target("delete", "flavours", "x", False)),
        ("POST", "/elsewhere", Target("post", None, None, False)),
    ],
)
def test_a_write_is_named_by_its_method_and_path(method: str, path: str, expected: Target) -> None:
    assert target_of(method, path) == expected


def test_many_object_writes_are_named_by_their_answer() -> None:
    answer = {"items": [{"kind": "Node", "name": "n1", "outcome": "created"}]}
    for verb in ("apply", "restore"):
        target = target_of("POST", f"/api/v1/{verb}")
        assert objects_in_answer(target, json.dumps(answer).encode()) == [("Node", "n1")]
    created = {"kind": "VirtualMachine", "metadata": {"name": "web1"}}
    target = target_of("POST", "/api/v1/vms")
    assert objects_in_answer(target, json.dumps(created).encode()) == [("VirtualMachine", "web1")]
    assert objects_in_answer(target, b"not json") == []
