"""Which deletion counts as asked with deleteVolumes (zkstore/deletion.py): only the one
whose pvc.io/delete-volumes annotation carries its own deletionTimestamp."""

from __future__ import annotations

from schemas import VirtualMachine, verbs
from zkstore.deletion import _asked_volumes

STAMP = "2026-01-01T00:00:00.000000Z"


def vm(annotation: str | None, deleting: str | None) -> VirtualMachine:
    annotations = {verbs.DELETE_VOLUMES: annotation} if annotation else {}
    meta = {"name": "web", "annotations": annotations, "deletionTimestamp": deleting}
    return VirtualMachine.model_validate({"metadata": meta, "spec": {"memory": "64Mi"}})


def test_only_the_annotation_stamped_with_this_deletion_deletes_volumes() -> None:
    assert _asked_volumes(vm(STAMP, STAMP))
    assert not _asked_volumes(vm(STAMP, None))  # restored from a backup, not being deleted
    assert not _asked_volumes(vm(STAMP, "2026-02-02T00:00:00.000000Z"))  # an older deletion's
    assert not _asked_volumes(vm("true", STAMP))  # set by hand
    assert not _asked_volumes(vm(None, STAMP))
