"""The recent cluster events (the bounded log under /events), newest last."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool

from api.deps import EventsDep
from api.routes.resources import API_PREFIX, error_responses
from schemas import kind_for

router = APIRouter()


@router.get(f"{API_PREFIX}/events", tags=["events"], responses=error_responses(400, 401, 503))
async def list_events(
    events: EventsDep,
    kind: Annotated[
        str | None,
        Query(
            description="only events of this kind (vm, node...)",
            json_schema_extra={
                "x-pvc-rules": [
                    "a kind's name, plural or short name, any case (VirtualMachine, vms, vm, "
                    "nodes, no, ...); any other word is refused (400)"
                ]
            },
        ),
    ] = None,
    name: Annotated[str | None, Query(max_length=63)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    kind_name = None
    if kind:
        try:
            kind_name = kind_for(kind).KIND
        except KeyError as exc:
            from api.errors import ApiError

            raise ApiError(400, str(exc.args[0]), details={"field": "kind"}) from None
    found = await run_in_threadpool(events.list, kind_name, name, limit)
    return {"apiVersion": "pvc/v1", "kind": "EventList", "items": [e.wire() for e in found]}
