"""What a spec write would do, computed without writing (server-side dry run).

The very plan the store's write would commit (zkstore/specwrite.py), so a dry run reports
the outcome the real write would: a new secret value is ``configured`` (``changedSecrets``
names it), the same value again ``unchanged``.
"""

from __future__ import annotations

from dataclasses import dataclass

from schemas import Resource
from zkstore.store import ApplyOutcome, Store


@dataclass(frozen=True)
class WritePlan:
    outcome: ApplyOutcome
    current: Resource | None
    """The object as stored now (None when it would be created)."""
    result: Resource
    """The object as it would be after the write (status as now)."""
    changed_secrets: tuple[str, ...] = ()
    """Secret fields (dotted, under spec) whose stored value the write would change."""


def plan_write(store: Store, resource: Resource, *, create: bool, update: bool) -> WritePlan:
    """Plan a create (``create`` only), a replace (``update`` only) or an apply (both)."""
    cls = type(resource)
    write = store.plan(resource, create=create, update=update)
    if write.read is None:
        return WritePlan("created", None, cls.model_validate(write.after))
    current = store.get(cls, resource.name)
    if write.outcome == "unchanged":
        return WritePlan("unchanged", current, current)
    after = {**write.after}
    after["metadata"] = {**after["metadata"], "resourceVersion": str(write.read[1].mzxid)}
    if current.status is not None:
        after["status"] = current.status.wire()
    return WritePlan("configured", current, cls.model_validate(after), write.secrets.changed)
