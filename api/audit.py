"""The audit of every write through the API: who (the token's name), what verb, on which
object, and the answer's code.

One log line per write (``event=audit token=... verb=... object=Kind/name code=...``), refused
ones (4xx, 5xx) included, and, for a write that succeeded and names an object, an event on
that object (reason ``Write``) that ``pvcctl describe`` and ``pvcctl events`` show. Neither
ever holds the request's body or a token: the object comes from the path, or, for a create
and for apply, from the names in the answer.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.middleware import CALLER, READ_METHODS, TRUE_VALUES, UNAUTHENTICATED
from schemas import kind_by_name, kind_by_plural, utcnow
from zkstore.events import EventLog

log = logging.getLogger("pvcapid.audit")

API_PREFIX = "/api/v1/"
WRITE_REASON = "Write"
_VERB_OF_METHOD = {"PUT": "replace", "PATCH": "patch", "DELETE": "delete"}
_MANY = ("apply", "restore")
"""Writes of many objects at once: their answer's items name them."""
_UNSAFE = re.compile(r"[^A-Za-z0-9._@/-]")


def _safe(text: str) -> str:
    """A path's words as they may appear in a key=value log line (no spaces, no newlines)."""
    return _UNSAFE.sub("?", text)[:200] or "-"


@dataclass(frozen=True)
class Target:
    """What a write's path says: its verb and object (kind or plural, and name if given)."""

    verb: str
    kind: str | None
    name: str | None
    names_from_answer: bool
    """A create or an apply: the path does not name the objects; the answer does."""


def target_of(method: str, path: str) -> Target:
    parts = (
        path.removeprefix(API_PREFIX).strip("/").split("/") if path.startswith(API_PREFIX) else []
    )
    if len(parts) == 1 and parts[0] in _MANY and method == "POST":
        return Target(parts[0], None, None, True)
    kind = None
    if parts:
        cls = kind_by_plural(parts[0])
        kind = cls.KIND if cls is not None else parts[0]
    if len(parts) == 1 and method == "POST":
        return Target("create", kind, None, True)
    if len(parts) == 2:
        return Target(_VERB_OF_METHOD.get(method, method.lower()), kind, parts[1], False)
    if len(parts) == 3 and method == "POST":
        return Target(parts[2], kind, parts[1], False)
    return Target(method.lower(), None, None, False)


def objects_in_answer(target: Target, body: bytes) -> list[tuple[str, str]]:
    """(kind, name) of what a successful create or apply wrote, read from its answer."""
    try:
        answer: Any = json.loads(body)
        if target.verb in _MANY:
            return [(str(i["kind"]), str(i["name"])) for i in answer["items"]]
        return [(str(answer["kind"]), str(answer["metadata"]["name"]))]
    except (ValueError, KeyError, TypeError):
        return []


class AuditMiddleware:
    """Audits every request that is not a read. Sits outside AuthMiddleware, so refused
    requests (401, 403) are audited too, and reads the caller's name it leaves in the scope."""

    def __init__(self, app: ASGIApp, events: EventLog) -> None:
        self.app = app
        self.events = events

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in READ_METHODS:
            await self.app(scope, receive, send)
            return
        target = target_of(scope["method"], scope["path"])
        code = 500
        answer: list[bytes] = []

        async def watched(message: Message) -> None:
            nonlocal code
            if message["type"] == "http.response.start":
                code = int(message["status"])
            elif message["type"] == "http.response.body" and target.names_from_answer:
                if code < 400:
                    answer.append(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, watched)
        finally:
            self.record(scope, target, code, b"".join(answer))

    def record(self, scope: Scope, target: Target, code: int, answer: bytes) -> None:
        token = str(scope.get(CALLER) or UNAUTHENTICATED)
        query = parse_qs(scope.get("query_string", b"").decode(errors="replace"))
        # As FastAPI reads the flag (yes, on, t, ... are true too): the last one given.
        dry_run = query.get("dryRun", ["false"])[-1].lower() in TRUE_VALUES
        objects: list[tuple[str, str]] = []
        if target.names_from_answer and code < 400:
            objects = objects_in_answer(target, answer)
        elif target.kind and target.name:
            objects = [(target.kind, target.name)]
        when = utcnow()
        for kind, name in objects or [("", "")]:
            log.info(
                "event=audit token=%s verb=%s object=%s code=%d dryRun=%s time=%s",
                token,
                _safe(target.verb),
                _safe(f"{kind}/{name}" if name else (target.kind or "-")),
                code,
                str(dry_run).lower(),
                when,
            )
        if code >= 400 or dry_run:
            return
        for kind, name in objects:
            if kind_by_name(kind) is not None:
                self.events.record(
                    kind, name, WRITE_REASON, f"{target.verb} by {token}", source="pvcapid"
                )
