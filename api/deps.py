"""Request dependencies: the store, and the request body read with a size limit."""

from __future__ import annotations

import json
import re
from typing import Annotated, Any

import yaml
from fastapi import Depends, Path, Request

from api.cache import ApiCache
from api.config import Settings
from api.errors import ApiError
from zkstore import Store
from zkstore.events import EventLog

# The same rule as schemas.meta's names: anything else cannot name a stored object,
# and must never reach a ZooKeeper path (".." or "/" would escape the kind's folder).
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def is_object_name(text: str) -> bool:
    return bool(_NAME.fullmatch(text))


async def object_name(
    name: Annotated[str, Path(description="the object's name (a DNS label)")],
) -> str:
    if not is_object_name(name):
        raise ApiError(404, f"no object is named {name!r}: names are DNS labels")
    return name


NameParam = Annotated[str, Depends(object_name)]

# The dependencies are coroutines though none awaits: FastAPI runs a plain function in a
# worker thread, a hop (and a GIL hand-over to and from the store's threads) per
# dependency per request. These only read the app's state.


async def get_store(request: Request) -> Store:
    store: Store = request.app.state.store
    if request.method not in ("GET", "HEAD") and not store.connected:
        # Fail at once rather than queue a write that lands after the client gave up.
        raise ApiError(
            503,
            "the cluster store (ZooKeeper) is unreachable: nothing was written; "
            "retry when it is back",
        )
    return store


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_events(request: Request) -> EventLog:
    events: EventLog = request.app.state.events
    return events


async def get_cache(request: Request) -> ApiCache:
    cache: ApiCache = request.app.state.cache
    return cache


CacheDep = Annotated[ApiCache, Depends(get_cache)]
StoreDep = Annotated[Store, Depends(get_store)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
EventsDep = Annotated[EventLog, Depends(get_events)]


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


_JSON_TYPES = ("application/json",)
_YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml")
MERGE_PATCH = "application/merge-patch+json"


def check_media_type(content_type: str, *, patch: bool = False) -> str:
    """The body's media type if we read it; 415 otherwise (no content type means YAML/JSON)."""
    media = content_type.split(";", 1)[0].strip().lower()
    if patch:
        if media != MERGE_PATCH:
            raise ApiError(
                415,
                f"PATCH takes {MERGE_PATCH} (RFC 7386), not {media or 'no content type'}",
            )
        return media
    if media and media not in (*_JSON_TYPES, *_YAML_TYPES, "text/plain"):
        raise ApiError(
            415, f"unsupported content type {media!r}: send application/json or application/yaml"
        )
    return media


def parse_documents(body: bytes, content_type: str) -> list[Any]:
    """JSON or YAML (one or many documents); a JSON list or a List object spreads out."""
    content_type = check_media_type(content_type, patch=content_type.startswith(MERGE_PATCH))
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
