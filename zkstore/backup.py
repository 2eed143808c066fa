"""Back up every object's spec, and restore it (docs/backup.md).

A backup holds, for each object, apiVersion, kind, metadata (name, labels, annotations)
and spec: no status, placement, uid, resourceVersion or generation, and none of the
store's other records (disk records, holders, events). Objects come in the order a
restore needs: the Cluster, StoragePools, Networks, Nodes, then VirtualMachines. Secrets
are as the API shows them, masked (``********``).

A restore creates what is missing and updates what differs, in that order; it deletes
nothing. Before it writes anything it checks every object:

- the cluster has no VirtualMachine yet, unless ``merge`` (a cluster with VMs is not
  empty: restoring over it is a decision the caller says it made);
- no masked secret would be stored: a masked secret keeps the stored one when the object
  exists with one; otherwise the restore is refused, naming each such object and field
  (put the secret in the file and restore again);
- every object is admitted as an apply admits it (pools and networks a VM names exist or
  come in the same restore).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from schemas import (
    KINDS,
    Cluster,
    Network,
    Node,
    Resource,
    StoragePool,
    VirtualMachine,
)
from schemas.node import SECRET_MASK
from zkstore.admission import admit_all
from zkstore.errors import Conflict, NotFound
from zkstore.migrations import read_version
from zkstore.store import ApplyOutcome, Store

log = logging.getLogger(__name__)

ORDER: tuple[type[Resource], ...] = (Cluster, StoragePool, Network, Node, VirtualMachine)
"""The order objects are backed up and restored in: what a VM names comes before it."""
assert set(ORDER) == set(KINDS), "every kind is backed up"

KEPT_METADATA = ("name", "labels", "annotations")


class MaskedSecret(Exception):
    """Objects whose backup carries only a secret's mask, with nothing stored to keep."""

    def __init__(self, found: list[tuple[str, str, str]]) -> None:
        self.found = found
        listed = "; ".join(f"{kind} {name!r} ({field})" for kind, name, field in found)
        super().__init__(
            f"the backup holds only the mask {SECRET_MASK!r} for a secret of {listed}, and "
            "the cluster has no stored secret to keep: write the secret into the file in "
            "its place and restore again; nothing was restored"
        )


class NotEmpty(Conflict):
    """A restore without merge into a cluster that has VirtualMachines."""


@dataclass(frozen=True)
class Restored:
    obj: Resource
    outcome: ApplyOutcome


def backup_document(obj: Resource) -> dict[str, Any]:
    """What a backup keeps of ``obj``: its spec and identity, secrets masked."""
    wire = obj.wire()
    meta = {k: wire["metadata"][k] for k in KEPT_METADATA if wire["metadata"].get(k)}
    return {"apiVersion": wire["apiVersion"], "kind": wire["kind"], "metadata": meta, **_spec(wire)}


def _spec(wire: dict[str, Any]) -> dict[str, Any]:
    return {"spec": wire["spec"]} if "spec" in wire else {}


def backup(store: Store) -> dict[str, Any]:
    """Every object of every kind, in restore order, as one List (each kind read at once;
    not one snapshot of the whole cluster)."""
    items = [backup_document(obj) for cls in ORDER for obj in store.list(cls)]
    version, _ = read_version(store.client, store.root)
    log.info("event=backup_taken objects=%d schema=%d", len(items), version)
    return {
        "apiVersion": "pvc/v1",
        "kind": "List",
        "metadata": {"schemaVersion": version},
        "items": items,
    }


def restore_order(objects: Iterable[Resource]) -> list[Resource]:
    rank = {cls.KIND: i for i, cls in enumerate(ORDER)}
    return sorted(objects, key=lambda o: rank[o.kind])


def check_restore(store: Store, objects: list[Resource], *, merge: bool) -> None:
    """Raise before anything is written when this restore must not happen (``NotEmpty``,
    ``MaskedSecret``, or the admission's ``InvalidResource``)."""
    if not merge:
        vms = store.names(VirtualMachine)
        if vms:
            shown = ", ".join(vms[:5]) + (f" and {len(vms) - 5} more" if len(vms) > 5 else "")
            raise NotEmpty(
                f"the cluster is not empty: it has {len(vms)} VirtualMachine(s) ({shown}); "
                "restore into an empty cluster, or pass merge (pvcctl cluster restore "
                "--merge) to create what is missing and update what differs, deleting "
                "nothing; nothing was restored"
            )
    masked: list[tuple[str, str, str]] = []
    for obj in objects:
        new = obj.stored().get("spec", {})
        found = _masks(new)
        if not found:
            continue
        try:
            current = store.get(type(obj), obj.name).stored().get("spec", {})
        except NotFound:
            current = {}
        # A mask keeps the stored secret: refused only where none is stored. (The stored spec
        # holds the mask where one is, zkstore/secrets.py; older stores, the value itself.)
        masked += [
            (obj.kind, obj.name, "spec." + _dotted(where))
            for where in found
            if _at(current, where) is None
        ]
    if masked:
        raise MaskedSecret(masked)
    admit_all(store, objects)


def restore(store: Store, objects: list[Resource]) -> list[Restored]:
    """Apply each checked object in restore order; a write that fails stops it there."""
    done: list[Restored] = []
    for obj in restore_order(objects):
        stored, outcome = store.apply(obj)
        done.append(Restored(stored, outcome))
    log.info(
        "event=restore_done objects=%d created=%d configured=%d",
        len(done),
        sum(1 for r in done if r.outcome == "created"),
        sum(1 for r in done if r.outcome == "configured"),
    )
    return done


Where = tuple[str | int, ...]


def _masks(value: Any, where: Where = ()) -> list[Where]:
    """Where in ``value`` the secret mask is."""
    if value == SECRET_MASK:
        return [where]
    if isinstance(value, dict):
        return [found for key, item in value.items() for found in _masks(item, (*where, key))]
    if isinstance(value, list):
        return [found for i, item in enumerate(value) for found in _masks(item, (*where, i))]
    return []


def _at(value: Any, where: Where) -> Any:
    for step in where:
        try:
            value = value[step]
        except (KeyError, IndexError, TypeError):
            return None
    return value


def _dotted(where: Where) -> str:
    return "".join(f"[{s}]" if isinstance(s, int) else f".{s}" for s in where).lstrip(".")
