"""list / get / create / replace / delete / status for every kind, one set of routes per kind."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from api.deps import SettingsDep, StoreDep, parse_documents, read_body
from api.errors import ApiError, invalid
from schemas import KINDS, FieldError, InvalidResource, Resource, parse_resource
from zkstore import NotFound

API_PREFIX = "/api/v1"

_BODY_DOC = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"type": "object"}},
            "application/yaml": {"schema": {"type": "string"}},
        },
    }
}


def object_list(cls: type[Resource], items: list[Resource]) -> dict[str, Any]:
    return {"apiVersion": "pvc/v1", "kind": f"{cls.KIND}List", "items": [i.wire() for i in items]}


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
    try:
        obj = parse_resource(doc)
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


def _routes_for(router: APIRouter, cls: type[Resource]) -> None:
    base = f"{API_PREFIX}/{cls.PLURAL}"
    tag = cls.KIND

    def list_objects(
        store: StoreDep, labelSelector: str | None = Query(default=None)
    ) -> dict[str, Any]:
        return object_list(cls, list(store.list(cls, labelSelector)))

    def get_object(name: str, store: StoreDep) -> dict[str, Any]:
        return store.get(cls, name).wire()

    def get_status(name: str, store: StoreDep) -> dict[str, Any]:
        if not store.exists(cls, name):
            raise NotFound(cls.KIND, name)
        return {"status": store.read_status(cls, name) or {}}

    async def create_object(request: Request, store: StoreDep, settings: SettingsDep) -> Any:
        obj = await parse_one(request, settings, cls)
        return JSONResponse(store.create(obj).wire(), status_code=201)

    async def replace_object(
        name: str, request: Request, store: StoreDep, settings: SettingsDep
    ) -> dict[str, Any]:
        obj = await parse_one(request, settings, cls, name)
        return store.update(obj).wire()

    def delete_object(
        name: str, store: StoreDep, resourceVersion: str | None = Query(default=None)
    ) -> dict[str, Any]:
        obj = store.get(cls, name)
        store.delete(cls, name, resourceVersion)
        return obj.wire()

    handlers: list[tuple[str, str, Callable[..., Any], dict[str, Any]]] = [
        (base, "GET", list_objects, {}),
        (base, "POST", create_object, {"status_code": 201, "openapi_extra": _BODY_DOC}),
        (f"{base}/{{name}}", "GET", get_object, {}),
        (f"{base}/{{name}}", "PUT", replace_object, {"openapi_extra": _BODY_DOC}),
        (f"{base}/{{name}}", "DELETE", delete_object, {}),
        (f"{base}/{{name}}/status", "GET", get_status, {}),
    ]
    for path, method, handler, extra in handlers:
        router.add_api_route(
            path,
            handler,
            methods=[method],
            tags=[tag],
            name=f"{handler.__name__}_{cls.PLURAL}",
            **extra,
        )


def build_router() -> APIRouter:
    router = APIRouter()
    for cls in KINDS:
        _routes_for(router, cls)
    return router
