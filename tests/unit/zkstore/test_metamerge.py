"""How a write merges into the stored object's metadata (zkstore/metamerge.py): finalizers
kept by an apply that sends none, replaced by a write that names them; an object being
deleted refuses every change but the removal of finalizers."""

from __future__ import annotations

from typing import Any

import pytest

from schemas import VirtualMachine, parse_resource, verbs
from zkstore.errors import Terminating
from zkstore.metamerge import keeps_finalizers, merge_metadata, with_kind_finalizers

FINALIZER = verbs.DOMAIN_FINALIZER


def stored(deleting: bool = False) -> dict[str, Any]:
    """The object as stored: the manifest's defaults, generation 3, the finalizer."""
    doc = written().stored()
    doc["metadata"].update(generation=3, finalizers=[FINALIZER])
    if deleting:
        doc["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00.000000Z"
    return doc


def written(spec: dict[str, Any] | None = None, **meta: Any) -> VirtualMachine:
    doc = {
        "apiVersion": "pvc/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": "web", **meta},
        "spec": spec or {"memory": "64Mi"},
    }
    vm = parse_resource(doc)
    assert isinstance(vm, VirtualMachine)
    return vm


def merge(current: dict[str, Any], vm: VirtualMachine, *, apply: bool) -> dict[str, Any] | None:
    return merge_metadata(
        VirtualMachine,
        "web",
        current,
        vm.stored(),
        keep_finalizers=keeps_finalizers(vm, apply=apply),
    )


def test_a_new_vm_gets_the_domain_finalizer_once() -> None:
    meta: dict[str, Any] = {"finalizers": ["example.com/x", FINALIZER]}
    with_kind_finalizers(VirtualMachine, meta)
    assert meta["finalizers"] == ["example.com/x", FINALIZER]


def test_an_apply_keeps_the_finalizers_a_replace_that_names_them_replaces_them() -> None:
    assert merge(stored(), written(), apply=True) is None  # unchanged
    assert merge(stored(), written(finalizers=[]), apply=True) is None
    removed = merge(stored(), written(finalizers=[]), apply=False)
    assert removed is not None and removed["finalizers"] == []
    assert removed["generation"] == 3  # metadata only: no generation bump
    changed = merge(stored(), written({"memory": "128Mi"}), apply=False)
    assert changed is not None and changed["finalizers"] == [FINALIZER]
    assert changed["generation"] == 4


def test_a_terminating_object_refuses_all_but_the_removal_of_finalizers() -> None:
    current = stored(deleting=True)
    for vm in (
        written({"memory": "128Mi"}, finalizers=[FINALIZER]),
        written(labels={"a": "b"}, finalizers=[FINALIZER]),
        written(finalizers=[FINALIZER, "example.com/more"]),
    ):
        with pytest.raises(Terminating, match="is being deleted"):
            merge(current, vm, apply=False)
    assert merge(current, written(), apply=True) is None  # the same manifest again
    removed = merge(current, written(finalizers=[]), apply=False)
    assert removed is not None and removed["finalizers"] == []
    assert removed["deletionTimestamp"] == current["metadata"]["deletionTimestamp"]
