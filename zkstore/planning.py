"""What a spec write would do, computed without writing (server-side dry run).

Mirrors ``Store._write_spec``'s notion of a change (zkstore/metamerge.py: spec, labels,
annotations and finalizers, with masked secrets put back first), so a dry run reports the
same outcome the real write would.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kazoo.exceptions import NoNodeError

from schemas import Resource, utcnow
from zkstore import paths
from zkstore.codec import decode
from zkstore.errors import AlreadyExists, Conflict, NotFound
from zkstore.metamerge import keeps_finalizers, merge_metadata, with_kind_finalizers
from zkstore.secrets import split_secrets
from zkstore.store import ApplyOutcome, Store


@dataclass(frozen=True)
class WritePlan:
    outcome: ApplyOutcome
    current: Resource | None
    """The object as stored now (None when it would be created)."""
    result: Resource
    """The object as it would be after the write (status as now)."""


def plan_write(store: Store, resource: Resource, *, create: bool, update: bool) -> WritePlan:
    """Plan a create (``create`` only), a replace (``update`` only) or an apply (both)."""
    cls = type(resource)
    path = store.path(paths.resource(cls.PLURAL, resource.name))
    wanted = resource.metadata.resource_version
    try:
        data, stat = store.client.get(path)
    except NoNodeError:
        if not create:
            raise NotFound(cls.KIND, resource.name) from None
        # An apply of a saved object (get -o yaml, delete, apply): its resourceVersion guards
        # an update only; there is nothing to update, so it is created.
        new = resource.stored()
        new["metadata"].update(generation=1, creationTimestamp=utcnow())
        new["metadata"].pop("resourceVersion", None)
        new["metadata"].pop("deletionTimestamp", None)
        with_kind_finalizers(cls, new["metadata"])
        return WritePlan("created", None, cls.model_validate(new))
    if not update:
        raise AlreadyExists(cls.KIND, resource.name)
    if wanted and wanted != str(stat.mzxid):
        raise Conflict(
            f"{cls.KIND} {resource.name!r} was modified: resourceVersion {wanted} is stale "
            f"(current {stat.mzxid}); re-read and retry"
        )
    current_raw: dict[str, Any] = decode(data)
    current = store.get(cls, resource.name)
    new = resource.stored()
    cls.keep_secrets(new.get("spec", {}), current_raw.get("spec", {}))
    split_secrets(cls, new.get("spec", {}))  # kept apart: they never change the spec
    merged_meta = merge_metadata(
        cls,
        resource.name,
        current_raw,
        new,
        keep_finalizers=keeps_finalizers(resource, apply=create),
    )
    if merged_meta is None:
        return WritePlan("unchanged", current, current)
    merged_meta["resourceVersion"] = str(stat.mzxid)
    status = current.status.wire() if current.status is not None else None
    after = {**current_raw, "metadata": merged_meta, "spec": new["spec"]}
    if status is not None:
        after["status"] = status
    return WritePlan("configured", current, cls.model_validate(after))
