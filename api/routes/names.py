"""The names of one kind's objects, and nothing else: what pvcctl's shell completion asks
for on every <TAB>, so the answer stays small (10,000 VMs are ~150 KB of names, against
megabytes of objects in the list)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path
from fastapi.concurrency import run_in_threadpool
from pydantic import Field

from api.deps import CacheDep, StoreDep
from api.routes.resources import API_PREFIX, error_responses
from schemas import kind_by_plural
from schemas.meta import Model

router = APIRouter()

Plural = Literal["vms", "nodes", "networks", "storagepools", "clusters"]


class NameList(Model):
    api_version: str = Field(default="pvc/v1", description="always pvc/v1")
    kind: Literal["NameList"] = "NameList"
    names: list[str] = Field(description="the kind's object names, sorted")


@router.get(
    f"{API_PREFIX}/names/{{plural}}",
    tags=["names"],
    responses=error_responses(401, 422, 503),
)
async def list_names(
    plural: Annotated[Plural, Path(description="the kind, by its plural")],
    store: StoreDep,
    cache: CacheDep,
) -> NameList:
    """The names of the kind's objects, sorted, from the API's cache (from ZooKeeper while
    the cache is still loading)."""
    cls = kind_by_plural(plural)
    assert cls is not None  # every Plural is a kind's (a unit test keeps them equal)
    kind_cache = cache.of(cls)
    if kind_cache.ready.is_set():
        return NameList(names=kind_cache.names())
    return NameList(names=await run_in_threadpool(store.names, cls))
