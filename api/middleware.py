"""ASGI middleware: bearer-token auth, request metrics, and the body size limit.

Pure ASGI (not BaseHTTPMiddleware), so watch streams pass through unbuffered.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any
from urllib.parse import parse_qs

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.docs import is_docs_path
from api.errors import status_body
from api.metrics import ApiMetrics
from api.tokens import ANONYMOUS, TokenTable

log = logging.getLogger(__name__)

OPEN_PATHS = frozenset({"/healthz"})
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

CALLER = "pvc.caller"
"""The ASGI scope key under which AuthMiddleware leaves the caller's token name."""
UNAUTHENTICATED = "unauthenticated"


async def _send_status(send: Send, code: int, message: str, headers: list[Any]) -> None:
    body = json.dumps(status_body(code, message)).encode()
    await send(
        {
            "type": "http.response.start",
            "status": code,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class AuthMiddleware:
    """With tokens configured: no token is 401, a readonly token writing is 403. Leaves the
    caller's token name in the scope (``anonymous`` with no tokens) for the audit."""

    def __init__(self, app: ASGIApp, tokens: TokenTable) -> None:
        self.app = app
        self.tokens = tokens

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.tokens:
            if scope["type"] == "http":
                scope[CALLER] = ANONYMOUS
            await self.app(scope, receive, send)
            return
        header = dict(scope["headers"]).get(b"authorization")
        offered = header[7:].strip() if header and header.lower().startswith(b"bearer ") else None
        caller = self.tokens.identify(offered) if offered else None
        scope[CALLER] = caller.name if caller else UNAUTHENTICATED
        if scope["path"] in OPEN_PATHS or is_docs_path(scope["path"]):
            await self.app(scope, receive, send)
            return
        if caller is None:
            message = "a valid bearer token is required" if header else "no bearer token given"
            await _send_status(send, 401, message, [(b"www-authenticate", b"Bearer")])
            return
        if caller.role != "admin" and scope["method"] not in READ_METHODS:
            await _send_status(send, 403, f"a {caller.role} token may not {scope['method']}", [])
            return
        await self.app(scope, receive, send)


class BodyLimitMiddleware:
    """413 for any body over the limit: declared (Content-Length) or streamed (chunked)."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            await _send_status(
                send,
                413,
                f"request body of {int(declared)} bytes is over the limit of {self.limit}",
                [],
            )
            return
        if declared or scope["method"] in READ_METHODS:
            await self.app(scope, receive, send)
            return
        # A chunked body: read it here up to the limit, then replay it to the app.
        chunks: list[bytes] = []
        seen = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > self.limit:
                await _send_status(
                    send, 413, f"request body is over the limit of {self.limit} bytes", []
                )
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


TRUE_VALUES = frozenset({"1", "true", "t", "yes", "y", "on"})
"""What FastAPI reads as true in a bool query parameter such as ``watch``."""


def is_watch(scope: Scope) -> bool:
    """A ``?watch=true`` request: a stream that lasts as long as the client keeps it."""
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    return any(v.lower() in TRUE_VALUES for v in query.get("watch", []))


class MetricsMiddleware:
    """Counts and times every request by route template (not raw path) and status code.

    Watch streams are counted, and gauged while open, but not timed: minutes-long streams
    would swamp the latency histogram that alerts read."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        code = 500
        watch = is_watch(scope)
        streaming: str | None = None  # the route of a watch stream gauged open

        async def watched(message: Message) -> None:
            nonlocal code, streaming
            if message["type"] == "http.response.start":
                code = int(message["status"])
                if watch and code == 200:
                    streaming = _template(scope)
                    self.metrics.watches.labels(streaming).inc()
            await send(message)

        try:
            await self.app(scope, receive, watched)
        finally:
            if streaming is not None:
                self.metrics.watches.labels(streaming).dec()
            self.metrics.observe(
                scope["method"],
                _template(scope),
                code,
                time.perf_counter() - started,
                watch=watch,
            )


def _template(scope: Scope) -> str:
    return getattr(scope.get("route"), "path", None) or "unmatched"
