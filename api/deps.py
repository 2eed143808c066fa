"""Request dependencies: the store, and the request body read with a size limit."""

from __future__ import annotations

import json
from typing import Annotated, Any

import yaml
from fastapi import Depends, Request

from api.config import Settings
from api.errors import ApiError
from zkstore import Store


def get_store(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


StoreDep = Annotated[Store, Depends(get_store)]
SettingsDep = Annotated[Settings, Depends(get_settings)]


async def read_body(request: Request, settings: Settings) -> bytes:
    limit = settings.max_body_bytes
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"request body of {declared} bytes is over the limit of {limit}")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise ApiError(413, f"request body is over the limit of {limit} bytes")
    return body


def parse_documents(body: bytes, content_type: str) -> list[Any]:
    """JSON or YAML (one or many documents); a JSON list or a List object spreads out."""
    if not body.strip():
        raise ApiError(400, "request body is empty")
    try:
        text = body.decode()
    except UnicodeDecodeError:
        raise ApiError(400, "request body is not UTF-8") from None
    docs: list[Any]
    if "json" in content_type:
        try:
            docs = [json.loads(text)]
        except json.JSONDecodeError as exc:
            raise ApiError(
                400, f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
            ) from None
    else:
        try:
            docs = [d for d in yaml.safe_load_all(text) if d is not None]
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark else ""
            raise ApiError(
                400, f"invalid YAML{where}: {getattr(exc, 'problem', None) or exc}"
            ) from None
    spread: list[Any] = []
    for doc in docs:
        if isinstance(doc, list):
            spread.extend(doc)
        elif (
            isinstance(doc, dict)
            and doc.get("kind") == "List"
            and isinstance(doc.get("items"), list)
        ):
            spread.extend(doc["items"])
        else:
            spread.append(doc)
    return spread
