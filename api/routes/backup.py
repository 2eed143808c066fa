"""``GET /api/v1/backup`` and ``POST /api/v1/restore`` (zkstore/backup.py, docs/backup.md).

The backup is a List of every object's apiVersion, kind, metadata (name, labels,
annotations) and spec, secrets masked, in restore order. A restore takes that List (JSON
or YAML, or the documents one after another, as ``pvcctl cluster backup`` writes them),
checks every object and then creates or updates each; ``merge=true`` allows it into a
cluster that has VMs. 409 into a cluster with VMs without merge; 422 for an invalid
document or a masked secret with no stored one to keep; nothing is written then.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool

from api.deps import CacheDep, EventsDep, SettingsDep, StoreDep, parse_documents, read_body
from api.errors import ApiError, invalid
from api.routes.apply import MANIFESTS_DOC
from api.routes.resources import API_PREFIX, parse_strictly, settle
from schemas import FieldError, InvalidResource, Resource
from zkstore.backup import MaskedSecret, backup, check_restore, restore

router = APIRouter()


@router.get(f"{API_PREFIX}/backup", tags=["backup"])
def get_backup(store: StoreDep) -> dict[str, Any]:
    """Every object's spec (no status), in restore order; secrets masked (``********``)."""
    return backup(store)


@router.post(f"{API_PREFIX}/restore", tags=["backup"], openapi_extra=MANIFESTS_DOC)
async def post_restore(
    request: Request,
    store: StoreDep,
    settings: SettingsDep,
    cache: CacheDep,
    events: EventsDep,
    merge: Annotated[
        bool,
        Query(
            description="restore into a cluster that has VMs: create what is missing, "
            "update what differs, delete nothing"
        ),
    ] = False,
) -> dict[str, Any]:
    body = await read_body(request, settings)
    docs = parse_documents(body, request.headers.get("content-type", ""))
    objects: list[Resource] = []
    seen: set[tuple[str, str]] = set()
    for index, doc in enumerate(docs):
        try:
            obj = parse_strictly(doc)
        except InvalidResource as exc:
            raise invalid(exc.errors, prefix=f"document {index + 1}: ") from None
        # A saved `get -o yaml` restores too: its status is never written, and its
        # resourceVersion must not pin a compare-and-set against another cluster's.
        obj.metadata.resource_version = None
        if (obj.kind, obj.name) in seen:
            duplicate = FieldError(("metadata", "name"), f"{obj.kind} {obj.name!r} appears twice")
            raise invalid([duplicate], prefix=f"document {index + 1}: ")
        seen.add((obj.kind, obj.name))
        objects.append(obj)

    def run() -> list[dict[str, Any]]:
        try:
            check_restore(store, objects, merge=merge)
        except MaskedSecret as exc:
            found = [{"kind": k, "name": n, "field": f} for k, n, f in exc.found]
            raise ApiError(422, str(exc), details={"maskedSecrets": found}) from None
        except InvalidResource as exc:
            raise invalid(exc.errors, prefix="nothing was restored: ") from None
        items = []
        for done in restore(store, objects):
            obj = done.obj
            if done.outcome != "unchanged":
                events.record(obj.kind, obj.name, "Restored", f"{done.outcome} by restore")
                settle(cache.of(type(obj)), obj.name, obj)
            items.append({"kind": obj.kind, "name": obj.name, "outcome": done.outcome})
        return items

    items = await run_in_threadpool(run)
    return {"apiVersion": "pvc/v1", "kind": "RestoreResult", "merge": merge, "items": items}
