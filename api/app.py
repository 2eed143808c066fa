"""The FastAPI application: routes, middleware, error handlers, and what it serves from."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from api.audit import AuditMiddleware
from api.cache import ApiCache
from api.config import Settings
from api.docs import declare_bearer, install_docs
from api.errors import install_handlers
from api.metrics import ApiMetrics
from api.middleware import AuthMiddleware, BodyLimitMiddleware, MetricsMiddleware
from api.openapi_contract import components as contract_components
from api.routes import (
    apply,
    backup,
    events,
    health,
    names,
    resources,
    verbs,
    version,
    vm_console,
    vm_rename,
)
from api.tokens import TokenTable
from zkstore import Store
from zkstore.events import EventLog

DESCRIPTION = """The PVC cluster API. Objects are `pvc/v1` VirtualMachine, Node, Network,
StoragePool and Cluster. Every error has one shape: `{"kind": "Status", "code", "reason",
"message", "details"}`. With bearer tokens configured, every path but /healthz, /docs and
/openapi.json needs one (Authorize, above, sends it)."""


def freeze_heap() -> None:
    """The loaded cache is a large, long-lived heap (10,000 VMs are ~1M objects): move it
    out of the cyclic GC's sight, or every full collection walks all of it and request
    latency grows with the cluster."""
    gc.collect()
    gc.freeze()


def store_for(settings: Settings) -> Store:
    """pvcapid's store: its ZooKeeper, root, identity (``zookeeperAuth``) and TLS."""
    return Store(
        settings.zookeeper,
        settings.root,
        auth=settings.zookeeper_auth.identity() if settings.zookeeper_auth else None,
        tls=settings.zookeeper_tls,
    )


def create_app(settings: Settings, store: Store | None = None) -> FastAPI:
    """With ``store`` given the caller owns its lifecycle (tests); otherwise the app does."""
    owned = store is None
    the_store = store or store_for(settings)
    cache = ApiCache(the_store, settings.watch_cache_events)
    metrics = ApiMetrics(cache)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if owned:
            await run_in_threadpool(the_store.start)
        cache.start_in_background(settings.watch_cache_load_timeout, on_loaded=freeze_heap)
        await run_in_threadpool(cache.wait_ready, settings.watch_cache_start_wait)
        try:
            yield
        finally:
            cache.close()
            if owned:
                the_store.stop()

    app = FastAPI(
        title="PVC API",
        version="1",
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # served by api.docs from a package's files, not a CDN
        redoc_url=None,
    )
    app.state.store = the_store
    app.state.settings = settings
    app.state.cache = cache
    app.state.events = EventLog(the_store, limit=settings.event_log_limit)
    install_handlers(app)
    install_docs(app)
    # Every answer but success is the one Status shape; document it on every route.
    errors = resources.error_responses(400, 401, 403, 404, 409, 413, 415, 422, 503)
    app.include_router(health.router, responses=resources.error_responses(503))
    app.include_router(version.router, responses=resources.error_responses(401))
    app.include_router(apply.router, responses=errors)
    app.include_router(events.router, responses=errors)
    app.include_router(names.router)
    app.include_router(verbs.router, responses=errors)
    app.include_router(vm_rename.router, responses=errors)
    app.include_router(backup.router, responses=errors)
    app.include_router(vm_console.router)
    app.include_router(resources.build_router())

    @app.get(
        "/metrics",
        tags=["health"],
        response_class=Response,
        responses={
            200: {"content": {"text/plain": {"schema": {"type": "string"}}}},
            **resources.error_responses(401, 403),
        },
    )
    def prometheus_metrics() -> Response:
        return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    def openapi() -> dict[str, Any]:
        # Bodies are read raw (JSON or YAML), so the kinds' schemas are added here.
        if app.openapi_schema is None:
            schema = FastAPI.openapi(app)
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for name, part in contract_components().items():
                components.setdefault(name, part)
            declare_bearer(schema, required=bool(settings.tokens))
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    # The last added runs first: metrics see every answer, the audit every write (refused
    # ones too), auth runs before any body is read.
    app.add_middleware(BodyLimitMiddleware, limit=settings.max_body_bytes)
    app.add_middleware(AuthMiddleware, tokens=TokenTable(settings.tokens))
    app.add_middleware(AuditMiddleware, events=app.state.events)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app
