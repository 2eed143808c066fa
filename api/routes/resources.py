"""list / watch / get / create / replace / merge-patch / delete / status for every kind.

Reads come from the API's watch cache (api/cache.py); writes go to the store
with compare-and-set, and wait until the cache shows them, so a client reads
its own writes. ``dryRun=true`` validates and computes the outcome, writing
nothing.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response, StreamingResponse

from api.cache import ApiCache, Expired, KindCache, Subscriber
from api.deps import (
    CacheDep,
    EventsDep,
    NameParam,
    SettingsDep,
    StoreDep,
    check_media_type,
    parse_documents,
    read_body,
)
from api.errors import ApiError, invalid
from api.patch import merge_patch
from api.primary_requests import Primary, PrimaryDep
from schemas import (
    KINDS,
    FieldError,
    InvalidResource,
    Network,
    Node,
    Resource,
    StoragePool,
    VirtualMachine,
    parse_resource,
)
from schemas.columns import table
from schemas.node import CHECK_FENCE_AGENT_INSTALLED
from zkstore import Conflict, Selector, Store, node_in_use, parse_selector
from zkstore.admission import admit, pool_in_use
from zkstore.deletion import Deletions, Remover
from zkstore.errors import Terminating
from zkstore.events import EventLog
from zkstore.network_admission import network_in_use
from zkstore.planning import plan_write

API_PREFIX = "/api/v1"
# How long a write waits for the watch cache to show it before answering anyway.
CACHE_CATCH_UP_SECONDS = 5.0
# How long a watch waits for a cache that is still loading before answering 503.
CACHE_LOAD_WAIT_SECONDS = 60.0


def refuse_if_in_use(store: Store, cls: type[Resource], name: str) -> None:
    """A Node, a StoragePool or a Network in use is not deleted (409, saying what to do first)."""
    if cls is Node and (why := node_in_use(store, name)) is not None:
        raise Conflict(why)
    if cls is StoragePool and (why := pool_in_use(store, name)) is not None:
        raise Conflict(why)
    if cls is Network and (why := network_in_use(store, name)) is not None:
        raise Conflict(why)


def body_doc(schema: dict[str, Any], yaml_too: bool = True, example: Any = None) -> dict[str, Any]:
    content: dict[str, Any] = {"application/json": {"schema": schema}}
    if example is not None:
        content["application/json"]["example"] = example
    if yaml_too:  # the same object, written as YAML (one document, or several for apply)
        content["application/yaml"] = {"schema": schema}
    return {"requestBody": {"required": True, "content": content}}


EXAMPLES: dict[str, dict[str, Any]] = {
    "VirtualMachine": {"metadata": {"name": "web1"}, "spec": {"memory": "512Mi", "vcpus": 1}},
    "Node": {"metadata": {"name": "node1"}, "spec": {"coordinator": True}},
    "Network": {"metadata": {"name": "lan"}, "spec": {"type": "bridged", "vlan": 100}},
    "StoragePool": {"metadata": {"name": "shared"}, "spec": {"type": "shared", "path": "/srv/vms"}},
    "Cluster": {"metadata": {"name": "cluster"}, "spec": {"maintenance": False}},
}


def kind_schema_ref(cls: type[Resource]) -> dict[str, Any]:
    """The kind's own JSON schema (added to the OpenAPI components by api.app)."""
    return {"$ref": f"#/components/schemas/{cls.KIND}"}


def example_of(cls: type[Resource]) -> dict[str, Any]:
    return {"apiVersion": "pvc/v1", "kind": cls.KIND, **EXAMPLES[cls.KIND]}


def kind_body_doc(cls: type[Resource]) -> dict[str, Any]:
    return body_doc(kind_schema_ref(cls), example=example_of(cls))


def kind_patch_doc(cls: type[Resource]) -> dict[str, Any]:
    schema = {"$ref": f"#/components/schemas/{cls.KIND}Patch"}
    content = {"application/merge-patch+json": {"schema": schema}}
    return {"requestBody": {"required": True, "content": content}}


# The documented error shape, so clients (and schemathesis) can check error answers.
STATUS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["kind", "code", "reason", "message"],
    "properties": {
        "apiVersion": {"type": "string"},
        "kind": {"type": "string", "enum": ["Status"]},
        "status": {"type": "string"},
        "code": {"type": "integer"},
        "reason": {"type": "string"},
        "message": {"type": "string"},
        "details": {"type": "object"},
    },
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {
        code: {
            "description": "an error, in the one Status shape",
            "content": {"application/json": {"schema": STATUS_SCHEMA}},
        }
        for code in codes
    }


DryRun = Annotated[bool, Query(description="validate and report, write nothing")]
SELECTOR_RULE = "a label selector: comma-separated key=value, key!=value, key or !key"
SELECTOR_QUERY = Query(
    description="e.g. app=web,tier!=db,env,!legacy",
    json_schema_extra={"x-pvc-rules": [SELECTOR_RULE]},
)
ResourceVersion = Annotated[
    str | None, Query(description="delete only at this resourceVersion (else 409)")
]
DeleteVolumes = Annotated[
    bool,
    Query(
        description="also delete the volumes PVC created for the VM in storage pools, once "
        "its domain is gone (existing volumes it named are kept); without it they are kept"
    ),
]


Force = Annotated[
    bool,
    Query(
        description="delete the object at once, without the graceful shutdown: the node "
        "destroys the domain when it sees the VM gone"
    ),
]


def json_response(body: Any, status_code: int = 200) -> Response:
    # json.dumps directly: FastAPI's generic encoder is the slowest part of a big list.
    return Response(
        json.dumps(body, separators=(",", ":")),
        status_code=status_code,
        media_type="application/json",
    )


def json_list_response(cls: type[Resource], parts: list[str], pos: int) -> Response:
    """``json_response(object_list(...))`` from the objects' JSON texts (the cache's, made
    once per version): the same bytes, without encoding every object again."""
    head = json.dumps(object_list(cls, [], pos), separators=(",", ":"))
    assert head.endswith("[]}")
    body = head[:-2] + ",".join(parts) + "]}"
    return Response(body, media_type="application/json")


VIEW_QUERY = Query(
    description="table or wide: the rows of pvcctl get's table (a Table), not the objects"
)


def table_response(
    cls: type[Resource], store: Store, cache: KindCache, selector: Selector | None, view: str
) -> Response:
    """A list as the rows of its table (``schemas.columns``): for 10,000 VMs some 100
    bytes each instead of the whole objects."""
    if cache.ready.is_set():
        items, pos = cache.list(selector)
    else:
        items, pos = [o.wire() for o in store.list(cls, selector)], 0
    columns, rows = table(cls.KIND, items, view == "wide")
    return json_response(
        {
            "apiVersion": "pvc/v1",
            "kind": "Table",
            "metadata": {"resourceVersion": str(pos)},
            "columns": columns,
            "rows": rows,
        }
    )


def object_list(cls: type[Resource], items: list[dict[str, Any]], pos: int) -> dict[str, Any]:
    return {
        "apiVersion": "pvc/v1",
        "kind": f"{cls.KIND}List",
        "metadata": {"resourceVersion": str(pos)},
        "items": items,
    }


async def parse_one(
    request: Request, settings: Any, cls: type[Resource], name: str | None = None
) -> Resource:
    body = await read_body(request, settings)
    docs = parse_documents(body, request.headers.get("content-type", ""))
    if len(docs) != 1:
        raise ApiError(400, f"expected one object in the body, got {len(docs)}")
    doc = docs[0]
    if isinstance(doc, dict):
        doc.setdefault("kind", cls.KIND)
        doc.setdefault("apiVersion", "pvc/v1")
        if doc.get("kind") != cls.KIND:
            raise invalid(
                [
                    FieldError(
                        ("kind",),
                        f"expected kind {cls.KIND!r} at this path, got {doc.get('kind')!r}",
                    )
                ]
            )
    return validate_one(doc, cls, name)


def parse_strictly(doc: Any) -> Resource:
    """``parse_resource`` taking JSON's own types only, as the OpenAPI document says.
    A write also checks what only this host can: that a Node's fence agent is installed."""
    return parse_resource(doc, strict=True, context={CHECK_FENCE_AGENT_INSTALLED: True})


def validate_one(doc: Any, cls: type[Resource], name: str | None) -> Resource:
    try:
        obj = parse_strictly(doc)
    except InvalidResource as exc:
        raise invalid(exc.errors, kind=cls.KIND, name=name) from None
    if name is not None and obj.name != name:
        raise invalid(
            [
                FieldError(
                    ("metadata", "name"), f"name {obj.name!r} does not match {name!r} in the URL"
                )
            ]
        )
    return obj


def settle(cache: KindCache, name: str, obj: Resource | None, *, or_gone: bool = False) -> None:
    """Wait until the cache shows this write (None: a deletion), so reads see it; with
    ``or_gone``, or the object's deletion that may follow it at once (a marked deletion)."""
    if not cache.ready.is_set():
        return  # reads go to the store until the cache is loaded
    version = None
    if obj is not None:
        version = int(obj.metadata.resource_version or 0)
    cache.wait_for_write(name, version, CACHE_CATCH_UP_SECONDS, or_gone=or_gone)


def read_object(cache: KindCache, store: Store, cls: type[Resource], name: str) -> dict[str, Any]:
    # Until loaded, the cache may hold an object without its status: read the store.
    found = cache.get(name) if cache.ready.is_set() else None
    if found is not None:
        return found
    # Not in this cache (yet): it may have been created through another instance.
    return store.get(cls, name).wire()


def _routes_for(router: APIRouter, cls: type[Resource]) -> None:
    base = f"{API_PREFIX}/{cls.PLURAL}"
    tag = cls.KIND

    async def list_objects(
        request: Request,
        store: StoreDep,
        cache: CacheDep,
        labelSelector: Annotated[str | None, SELECTOR_QUERY] = None,
        watch: Annotated[bool, Query(include_in_schema=False)] = False,
        resourceVersion: Annotated[str | None, Query(include_in_schema=False)] = None,
        timeoutSeconds: Annotated[int | None, Query(include_in_schema=False, ge=1)] = None,
        view: Annotated[Literal["table", "wide"] | None, VIEW_QUERY] = None,
    ) -> Response:
        """The kind's objects, sorted by name; ``watch=true`` streams changes instead.
        ``view=table`` (or ``wide``) answers with the rows of ``pvcctl get``'s table instead
        of the objects: a ``Table`` with ``columns`` and ``rows`` (lists of cells).

        Watch (not in this schema, as it is a stream): newline-delimited JSON
        ``{"type": ADDED|MODIFIED|DELETED, "object": {...}, "resourceVersion": "N"}``.
        With ``resourceVersion=N`` (a list's ``metadata.resourceVersion`` or an
        event's) the stream starts after N; without, with ADDED for every object.
        410 Expired when N is too old to resume from: list again.
        ``timeoutSeconds`` ends the stream after that long.
        """
        selector = parse_selector(labelSelector) if labelSelector else None
        kind_cache = cache.of(cls)
        if watch and view:
            raise ApiError(400, "view goes with a list, not with watch=true")
        if watch:
            # While the cache is still loading (a big cluster, just started) a watch
            # waits for it: it cannot stream changes it has no baseline for.
            wait = float(timeoutSeconds or CACHE_LOAD_WAIT_SECONDS)
            if not await run_in_threadpool(kind_cache.ready.wait, wait):
                raise ApiError(503, "the API's watch cache is still loading; retry shortly")
            return watch_response(kind_cache, selector, resourceVersion, timeoutSeconds)
        if view is not None:
            return await run_in_threadpool(table_response, cls, store, kind_cache, selector, view)
        if not kind_cache.ready.is_set():
            # Still loading: read ZooKeeper directly (slower, same answer). Position 0
            # means "not resumable": a watch from it starts with the full state.
            objects = await run_in_threadpool(store.list, cls, selector)
            return json_response(object_list(cls, [o.wire() for o in objects], 0))
        parts, pos = await run_in_threadpool(kind_cache.list_json, selector)
        return await run_in_threadpool(json_list_response, cls, parts, pos)

    def get_object(name: NameParam, store: StoreDep, cache: CacheDep) -> Response:
        return json_response(read_object(cache.of(cls), store, cls, name))

    def get_status(name: NameParam, store: StoreDep, cache: CacheDep) -> dict[str, Any]:
        return {"status": read_object(cache.of(cls), store, cls, name).get("status") or {}}

    async def create_object(
        request: Request,
        store: StoreDep,
        settings: SettingsDep,
        cache: CacheDep,
        events: EventsDep,
        dryRun: DryRun = False,
    ) -> Response:
        obj = await parse_one(request, settings, cls)
        await run_in_threadpool(admit, store, obj)
        if dryRun:
            plan = await run_in_threadpool(plan_write, store, obj, create=True, update=False)
            return json_response(plan.result.wire(), 201)

        def create() -> dict[str, Any]:
            created = store.create(obj)
            events.record(cls.KIND, obj.name, "Created", "created through the API")
            settle(cache.of(cls), obj.name, created)
            return created.wire()

        return json_response(await run_in_threadpool(create), 201)

    async def replace_object(
        name: NameParam,
        request: Request,
        store: StoreDep,
        settings: SettingsDep,
        cache: CacheDep,
        events: EventsDep,
        primary: PrimaryDep,
        dryRun: DryRun = False,
    ) -> dict[str, Any]:
        obj = await parse_one(request, settings, cls, name)
        return await run_in_threadpool(
            write_replace, store, cache, events, obj, dryRun, primary.remove
        )

    async def patch_object(
        name: NameParam,
        request: Request,
        store: StoreDep,
        settings: SettingsDep,
        cache: CacheDep,
        events: EventsDep,
        primary: PrimaryDep,
        dryRun: DryRun = False,
    ) -> dict[str, Any]:
        media = check_media_type(request.headers.get("content-type", ""), patch=True)
        body = await read_body(request, settings)
        patch = parse_documents(body, media)
        if len(patch) != 1 or not isinstance(patch[0], dict):
            raise ApiError(400, "a merge patch is one JSON object")
        return await run_in_threadpool(
            write_patch, store, cache, events, cls, name, patch[0], dryRun, primary.remove
        )

    def delete(
        name: str,
        store: Store,
        cache: ApiCache,
        events: EventLog,
        primary: Primary,
        resource_version: str | None,
        dry_run: bool,
        delete_volumes: bool = False,
        force: bool = False,
    ) -> dict[str, Any]:
        store.get(cls, name)  # 404 before 409
        refuse_if_in_use(store, cls, name)
        # Marking it Terminating is a spec write (the API's); removing it with its status
        # and placement is the primary's (api/primary_requests.py).
        obj, gone = primary.deletions(events).request(
            cls,
            name,
            resource_version=resource_version,
            delete_volumes=delete_volumes,
            force=force,
            dry_run=dry_run,
        )
        if not dry_run:
            settle(cache.of(cls), name, None if gone else obj, or_gone=True)
        return obj.wire()

    def delete_object(
        name: NameParam,
        store: StoreDep,
        cache: CacheDep,
        events: EventsDep,
        primary: PrimaryDep,
        resourceVersion: ResourceVersion = None,
        dryRun: DryRun = False,
    ) -> dict[str, Any]:
        """Delete the object; one with finalizers is marked Terminating
        (``metadata.deletionTimestamp``) and goes once they are all removed. The primary
        removes it (with its status): 503 when none did within ``primaryRequestTimeout``,
        nothing deleted."""
        return delete(name, store, cache, events, primary, resourceVersion, dryRun)

    def delete_vm(
        name: NameParam,
        store: StoreDep,
        cache: CacheDep,
        events: EventsDep,
        primary: PrimaryDep,
        resourceVersion: ResourceVersion = None,
        dryRun: DryRun = False,
        deleteVolumes: DeleteVolumes = False,
        force: Force = False,
    ) -> dict[str, Any]:
        """Delete the VM gracefully: it is marked Terminating (``metadata.deletionTimestamp``),
        the node that holds its domain shuts it down (ACPI, then forced off at
        ``shutdownTimeout``) and undefines it, then the object goes. A VM that runs nowhere
        goes at once. While Terminating, only removing finalizers may change it (else 409).
        ``force=true`` deletes the object at once; its node then destroys the domain.
        The primary removes the object (with its status and placement): 503 when none did
        within ``primaryRequestTimeout``, nothing deleted."""
        return delete(
            name, store, cache, events, primary, resourceVersion, dryRun, deleteVolumes, force
        )

    delete_vm.__name__ = "delete_object"  # one operation name per kind, as before

    common = error_responses(400, 401, 403, 404, 409, 413, 415, 422, 503)
    handlers: list[tuple[str, str, Callable[..., Any], dict[str, Any]]] = [
        (base, "GET", list_objects, {}),
        (base, "POST", create_object, {"status_code": 201, "openapi_extra": kind_body_doc(cls)}),
        (f"{base}/{{name}}", "GET", get_object, {}),
        (f"{base}/{{name}}", "PUT", replace_object, {"openapi_extra": kind_body_doc(cls)}),
        (f"{base}/{{name}}", "PATCH", patch_object, {"openapi_extra": kind_patch_doc(cls)}),
        (
            f"{base}/{{name}}",
            "DELETE",
            delete_vm if cls is VirtualMachine else delete_object,
            {},
        ),
        (f"{base}/{{name}}/status", "GET", get_status, {}),
    ]
    for path, method, handler, extra in handlers:
        router.add_api_route(
            path,
            handler,
            methods=[method],
            tags=[tag],
            name=f"{handler.__name__}_{cls.PLURAL}",
            responses=common,
            **extra,
        )


def write_replace(
    store: Store,
    cache: ApiCache,
    events: EventLog,
    obj: Resource,
    dry_run: bool,
    remover: Remover | None = None,
) -> dict[str, Any]:
    cls = type(obj)
    admit(store, obj)
    if dry_run:
        return plan_write(store, obj, create=False, update=True).result.wire()
    updated = store.update(obj)
    events.record(cls.KIND, obj.name, "Updated", "replaced through the API")
    return finish_write(store, cache, events, updated, remover)


def finish_write(
    store: Store,
    cache: ApiCache,
    events: EventLog,
    updated: Resource,
    remover: Remover | None = None,
) -> dict[str, Any]:
    """Settle the cache on a write; an object being deleted whose last finalizer the write
    removed goes now (``remover``: the primary removes it, api/primary_requests.py)."""
    cls = type(updated)
    if updated.deleting and not updated.metadata.finalizers:
        if Deletions(store, events, remover=remover).complete(cls, updated.name):
            settle(cache.of(cls), updated.name, None)
            return updated.wire()
    settle(cache.of(cls), updated.name, updated)
    return updated.wire()


def write_patch(
    store: Store,
    cache: ApiCache,
    events: EventLog,
    cls: type[Resource],
    name: str,
    patch: dict[str, Any],
    dry_run: bool,
    remover: Remover | None = None,
) -> dict[str, Any]:
    """Apply an RFC 7386 merge patch to metadata (labels, annotations) and spec.

    With ``metadata.resourceVersion`` in the patch the write is a
    compare-and-set at that version (409 when stale); without, the patch is
    re-applied to a fresh read until it lands.
    """
    meta_patch = patch.get("metadata")
    if meta_patch is not None and not isinstance(meta_patch, dict):
        raise invalid([FieldError(("metadata",), "must be an object")])
    pinned = (meta_patch or {}).get("resourceVersion")
    if pinned is not None and (isinstance(pinned, bool) or not isinstance(pinned, str | int)):
        raise invalid([FieldError(("metadata", "resourceVersion"), "must be a string")])
    for key in ("name", "uid", "generation", "creationTimestamp"):
        if meta_patch and key in meta_patch:
            raise invalid([FieldError(("metadata", key), "cannot be changed by a patch")])
    for key in ("kind", "apiVersion"):
        if key in patch and patch[key] not in (cls.KIND if key == "kind" else "pvc/v1",):
            raise invalid([FieldError((key,), "cannot be changed by a patch")])
    for _ in range(8):
        current = store.get(cls, name)
        doc = current.wire()
        doc.pop("status", None)
        merged = merge_patch(doc, {k: v for k, v in patch.items() if k != "status"})
        merged.setdefault("metadata", {})["name"] = name
        merged["metadata"]["resourceVersion"] = (
            str(pinned) if pinned else current.metadata.resource_version
        )
        obj = validate_one(merged, cls, name)
        admit(store, obj)
        if dry_run:
            return plan_write(store, obj, create=False, update=True).result.wire()
        try:
            updated = store.update(obj)
        except Terminating:
            raise  # retrying cannot help: the object is being deleted
        except Conflict:
            if pinned:
                raise
            continue
        events.record(cls.KIND, name, "Patched", "merge-patched through the API")
        return finish_write(store, cache, events, updated, remover)
    raise Conflict(f"{cls.KIND} {name!r} kept changing; gave up patching it")


def watch_response(
    cache: KindCache, selector: Any, since: str | None, timeout: int | None
) -> StreamingResponse:
    start: int | None = None
    if since not in (None, "", "0"):
        assert since is not None
        if not since.isdigit():
            raise ApiError(400, f"resourceVersion {since!r} is not a number")
        start = int(since)
    loop = asyncio.get_running_loop()
    try:
        sub, first = cache.subscribe(loop, start)
    except Expired as exc:
        raise ApiError(410, str(exc), details={"resourceVersion": since}) from None
    return StreamingResponse(
        _stream(cache, sub, first, selector, timeout), media_type="application/x-ndjson"
    )


async def _stream(
    cache: KindCache,
    sub: Subscriber,
    first: list[Any],
    selector: Any,
    timeout: int | None,
) -> AsyncIterator[bytes]:
    def encode(event: Any) -> bytes | None:
        if selector is not None and not selector.matches(event.labels):
            return None
        return (json.dumps(event.line(), separators=(",", ":")) + "\n").encode()

    deadline = None if timeout is None else asyncio.get_running_loop().time() + timeout
    try:
        for event in first:
            if (line := encode(event)) is not None:
                yield line
        while True:
            wait = None if deadline is None else deadline - asyncio.get_running_loop().time()
            if wait is not None and wait <= 0:
                return
            try:
                event = await asyncio.wait_for(sub.queue.get(), wait)
            except TimeoutError:
                return
            if event is None:  # the server is shutting down
                return
            if (line := encode(event)) is not None:
                yield line
    finally:
        cache.unsubscribe(sub)


def build_router() -> APIRouter:
    router = APIRouter()
    for cls in KINDS:
        _routes_for(router, cls)
    return router


__all__ = ["API_PREFIX", "build_router", "error_responses", "object_list"]
