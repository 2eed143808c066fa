"""``POST /api/v1/vms/{name}/rename``: rename a stopped VM (zkstore/rename.py).

The primary carries it out (the API may not move a status or a placement: zkstore/acl.py);
the API asks it (api/primary_requests.py) and answers with its outcome. 404 when the VM
does not exist; 422 for a new name that is not a DNS label; 409 when the new name is taken
(reason ``AlreadyExists``), while the VM is not stopped (the reason says what to do), or
when it changed while being renamed (nothing was renamed); 503 when no primary acted within
``primaryRequestTimeout`` (nothing was renamed).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from pydantic import ConfigDict, Field

from api.deps import CacheDep, EventsDep, NameParam, StoreDep
from api.openapi_contract import DNS_LABEL
from api.primary_requests import PrimaryDep
from api.routes.resources import API_PREFIX, settle
from schemas import VirtualMachine
from schemas.meta import Model
from zkstore.requests import RENAME

router = APIRouter()


class RenameRequest(Model):
    model_config = ConfigDict(strict=True)
    new_name: str = Field(
        pattern=DNS_LABEL,
        json_schema_extra={"x-pvc-rules": ["a DNS label no other VirtualMachine has"]},
    )


@router.post(f"{API_PREFIX}/vms/{{name}}/rename", tags=["verbs"])
async def vm_rename(
    name: NameParam,
    body: RenameRequest,
    store: StoreDep,
    cache: CacheDep,
    events: EventsDep,
    primary: PrimaryDep,
) -> dict[str, Any]:
    """Rename a stopped VM (runStrategy Halted, phase Stopped): its spec, status, placement,
    events, console and disk records move to the new name in one transaction; its volumes
    stay linked and keep their own names (no volume file is renamed)."""
    new = body.new_name

    def run() -> VirtualMachine:
        store.get(VirtualMachine, name)  # 404 without asking the primary
        primary.ask(RENAME, VirtualMachine.KIND, name, {"newName": new})
        renamed = store.get(VirtualMachine, new)
        settle(cache.of(VirtualMachine), name, None)
        settle(cache.of(VirtualMachine), new, renamed)
        return renamed

    renamed = await run_in_threadpool(run)
    events.record(VirtualMachine.KIND, new, "Renamed", f"renamed from {name}")
    return renamed.wire()
