"""One error shape everywhere (Kubernetes' Status), and the handlers that produce it."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from kazoo.exceptions import ConnectionLoss, KazooException, NoAuthError, SessionExpiredError
from kazoo.handlers.threading import KazooTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from schemas import API_VERSION, FieldError, InvalidResource
from zkstore import AlreadyExists, Conflict, InvalidSelector, NotFound, Unavailable

log = logging.getLogger(__name__)

_REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    410: "Expired",
    413: "RequestEntityTooLarge",
    415: "UnsupportedMediaType",
    422: "Invalid",
    500: "InternalError",
    503: "ServiceUnavailable",
}


# The store could not be reached: 503, retry later (nothing about the request is wrong).
STORE_UNAVAILABLE = (Unavailable, ConnectionLoss, SessionExpiredError, KazooTimeoutError)


class ApiError(Exception):
    def __init__(
        self,
        code: int,
        message: str,
        *,
        reason: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        self.code = code
        self.reason = reason or _REASONS.get(code, "Failure")
        self.message = message
        self.details = details or {}
        super().__init__(message)


def status_body(
    code: int, message: str, reason: str | None = None, details: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "Status",
        "status": "Failure",
        "code": code,
        "reason": reason or _REASONS.get(code, "Failure"),
        "message": message,
        "details": details or {},
    }


def invalid(
    errors: list[FieldError], kind: str | None = None, name: str | None = None, prefix: str = ""
) -> ApiError:
    first = errors[0]
    details: dict[str, Any] = {
        "field": first.field,
        "causes": [{"field": e.field, "message": e.message} for e in errors],
    }
    if kind:
        details["kind"] = kind
    if name:
        details["name"] = name
    message = "; ".join(str(e) for e in errors)
    return ApiError(422, f"{prefix}{message}", details=details)


def _response(exc: ApiError, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(
        status_body(exc.code, exc.message, exc.reason, exc.details),
        status_code=exc.code,
        headers=headers,
    )


_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")


def allowed_methods(request: Request) -> str:
    """Every method some route serves at this path. Starlette's own 405 names only the
    first route that matched the path, and each method here is a route of its own."""
    routes = request.app.router.routes
    allowed = [
        method
        for method in _METHODS
        if any(r.matches({**request.scope, "method": method})[0] == Match.FULL for r in routes)
    ]
    return ", ".join(allowed)


def install_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_req: Request, exc: ApiError) -> JSONResponse:
        return _response(exc)

    @app.exception_handler(InvalidResource)
    async def _invalid(_req: Request, exc: InvalidResource) -> JSONResponse:
        return _response(invalid(exc.errors))

    @app.exception_handler(NotFound)
    async def _not_found(_req: Request, exc: NotFound) -> JSONResponse:
        return _response(ApiError(404, str(exc), details={"kind": exc.kind, "name": exc.name}))

    @app.exception_handler(AlreadyExists)
    async def _exists(_req: Request, exc: AlreadyExists) -> JSONResponse:
        return _response(
            ApiError(
                409, str(exc), reason="AlreadyExists", details={"kind": exc.kind, "name": exc.name}
            )
        )

    @app.exception_handler(Conflict)
    async def _conflict(_req: Request, exc: Conflict) -> JSONResponse:
        return _response(ApiError(409, str(exc)))

    @app.exception_handler(InvalidSelector)
    async def _selector(_req: Request, exc: InvalidSelector) -> JSONResponse:
        return _response(ApiError(400, str(exc), details={"field": "labelSelector"}))

    @app.exception_handler(RequestValidationError)
    async def _request_invalid(_req: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [FieldError(tuple(e["loc"]), e["msg"]) for e in exc.errors()] or [
            FieldError((), "invalid request")
        ]
        return _response(invalid(errors))

    @app.exception_handler(StarletteHTTPException)
    async def _http(req: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = allowed_methods(req)  # RFC 9110: a 405 says what is allowed
        return _response(ApiError(exc.status_code, str(exc.detail)), headers)

    for exc_type in STORE_UNAVAILABLE:

        @app.exception_handler(exc_type)
        async def _unavailable(_req: Request, exc: Exception) -> JSONResponse:
            return _response(ApiError(503, f"the cluster store is unreachable: {exc!r}"))

    @app.exception_handler(Exception)
    async def _internal(_req: Request, exc: Exception) -> JSONResponse:
        # A bug, not bad input: log it whole, answer in the one error shape.
        log.exception("event=internal_error error=%r", exc)
        return _response(ApiError(500, f"internal error: {type(exc).__name__}"))

    @app.exception_handler(NoAuthError)
    async def _no_auth(_req: Request, exc: NoAuthError) -> JSONResponse:
        # The store's ACLs refused pvcapid's own identity: nothing was written (a refused
        # part fails its whole transaction). The caller did nothing wrong; the admin must
        # give pvcapid the identity and rights docs/configuration.md names.
        log.error("event=store_refused error=%r", exc)
        return _response(
            ApiError(
                403,
                "the cluster store refused pvcapid's ZooKeeper identity this write "
                "(its ACLs do not allow it); nothing was changed",
            )
        )

    @app.exception_handler(KazooException)
    async def _kazoo(_req: Request, exc: KazooException) -> JSONResponse:
        log.exception("event=store_error error=%r", exc)
        return _response(ApiError(503, f"the cluster store failed: {exc!r}"))
