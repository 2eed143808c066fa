"""Multi-document apply: validate every object first, then create or update each."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from api.deps import SettingsDep, StoreDep, parse_documents, read_body
from api.errors import invalid
from api.routes.resources import _BODY_DOC, API_PREFIX
from schemas import FieldError, InvalidResource, Resource, parse_resource

router = APIRouter()


@router.post(f"{API_PREFIX}/apply", tags=["apply"], openapi_extra=_BODY_DOC)
async def apply(request: Request, store: StoreDep, settings: SettingsDep) -> dict[str, Any]:
    body = await read_body(request, settings)
    docs = parse_documents(body, request.headers.get("content-type", ""))
    objects: list[Resource] = []
    seen: set[tuple[str, str]] = set()
    for index, doc in enumerate(docs):
        try:
            obj = parse_resource(doc)
        except InvalidResource as exc:
            # Nothing is written unless every document is valid.
            raise invalid(exc.errors, prefix=f"document {index + 1}: ") from None
        key = (obj.kind, obj.name)
        if key in seen:
            duplicate = FieldError(("metadata", "name"), f"{obj.kind} {obj.name!r} appears twice")
            raise invalid([duplicate], prefix=f"document {index + 1}: ")
        seen.add(key)
        objects.append(obj)
    results = []
    for obj in objects:
        stored, outcome = store.apply(obj)
        results.append(
            {
                "kind": stored.kind,
                "name": stored.name,
                "outcome": outcome,
                "resourceVersion": stored.metadata.resource_version,
                "generation": stored.metadata.generation,
            }
        )
    return {"apiVersion": "pvc/v1", "kind": "ApplyResult", "items": results}
