"""``GET /api/v1/backup`` and ``POST /api/v1/restore`` (zkstore/backup.py, docs/backup.md).

The backup is a List of every object's apiVersion, kind, metadata (name, labels,
annotations) and spec, secrets masked, in restore order. A restore takes that List (JSON
or YAML, or the documents one after another, as ``pvcctl cluster backup`` writes them),
checks every object and then creates or updates each; ``merge=true`` allows it into a
cluster that has VMs. 409 into a cluster with VMs without merge; 422 for an invalid
document or a masked secret with no stored one to keep; nothing is written then.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool

from api.deps import CacheDep, EventsDep, SettingsDep, StoreDep, parse_documents, read_body
from api.errors import ApiError, invalid
from api.routes.apply import MANIFESTS_DOC, parse_objects, write_objects
from api.routes.resources import API_PREFIX
from schemas import InvalidResource
from zkstore.backup import MaskedSecret, backup, check_restore, restore_order

log = logging.getLogger(__name__)

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
    # A saved `get -o yaml` restores too: its status is never written, and its
    # resourceVersion must not pin a compare-and-set against another cluster's.
    objects = parse_objects(docs, unpinned=True)

    def run() -> list[dict[str, Any]]:
        try:
            check_restore(store, objects, merge=merge)
        except MaskedSecret as exc:
            found = [{"kind": k, "name": n, "field": f} for k, n, f in exc.found]
            raise ApiError(422, str(exc), details={"maskedSecrets": found}) from None
        except InvalidResource as exc:
            raise invalid(exc.errors, prefix="nothing was restored: ") from None
        # In restore order (what a VM names first), each error naming its document.
        ordered = {id(o): i for i, o in enumerate(objects)}
        order = [ordered[id(o)] for o in restore_order(objects)]
        items = write_objects(
            store, cache, events, objects, order=order, reason="Restored", verb="restore"
        )
        log.info(
            "event=restore_done objects=%d created=%d configured=%d",
            len(items),
            sum(1 for i in items if i["outcome"] == "created"),
            sum(1 for i in items if i["outcome"] == "configured"),
        )
        return items

    items = await run_in_threadpool(run)
    return {"apiVersion": "pvc/v1", "kind": "RestoreResult", "merge": merge, "items": items}
