"""How a write of an object's spec and metadata merges into what is stored: shared by the
store's writes (store.py) and the server-side dry run (planning.py), so both agree.

A writer that sends no ``metadata.finalizers`` (a manifest, as users write them) keeps the
stored ones: finalizers belong to the controllers that put them there, and an apply must
not drop them; nor does an apply that sends an empty list (a client's dump of a manifest).
A replace or a merge patch that sends the field replaces them: that is how a user removes
a finalizer on purpose.
While an object is being deleted (it has a ``deletionTimestamp``), nothing changes but the
removal of finalizers, as Kubernetes has it for most fields: anything else is Terminating.
"""

from __future__ import annotations

from typing import Any

from schemas import Resource
from zkstore.errors import Terminating

_MAPPINGS = ("labels", "annotations")


def with_kind_finalizers(cls: type[Resource], meta: dict[str, Any]) -> None:
    """Add the kind's own finalizers to a new object's metadata (in place)."""
    meta["finalizers"] = list(dict.fromkeys([*meta.get("finalizers", []), *cls.FINALIZERS]))


def keeps_finalizers(resource: Resource, *, apply: bool) -> bool:
    """Whether a write of ``resource`` keeps the stored finalizers (see above)."""
    given = "finalizers" in resource.metadata.model_fields_set
    return not given or (apply and not resource.metadata.finalizers)


def merge_metadata(
    cls: type[Resource],
    name: str,
    current: dict[str, Any],
    new: dict[str, Any],
    *,
    keep_finalizers: bool,
    secrets_changed: bool = False,
) -> dict[str, Any] | None:
    """The metadata after writing ``new`` over ``current`` (both as stored), or None when the
    write changes nothing. Raises Terminating for a change an object being deleted refuses.
    ``secrets_changed``: a secret's stored value changes (its spec keeps the same mask),
    which is a change of the spec: the generation moves."""
    cur_meta, new_meta = current["metadata"], new["metadata"]
    old_finalizers = list(cur_meta.get("finalizers", []))
    finalizers = old_finalizers if keep_finalizers else list(new_meta.get("finalizers", []))
    spec_changed = secrets_changed or current.get("spec") != new.get("spec")
    mappings_changed = any(cur_meta.get(k, {}) != new_meta.get(k, {}) for k in _MAPPINGS)
    if not spec_changed and not mappings_changed and finalizers == old_finalizers:
        return None
    since = cur_meta.get("deletionTimestamp")
    if since and (spec_changed or mappings_changed or not set(finalizers) <= set(old_finalizers)):
        raise Terminating(cls.KIND, name, str(since))
    merged = dict(cur_meta)
    for key in _MAPPINGS:
        merged[key] = new_meta.get(key, {})
    merged["finalizers"] = finalizers
    if spec_changed:
        merged["generation"] = int(cur_meta.get("generation", 1)) + 1
    return merged
