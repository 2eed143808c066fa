"""The FastAPI application: routes, error handlers and the store it serves."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from api.config import Settings
from api.errors import install_handlers
from api.routes import apply, health, resources
from zkstore import Store


def create_app(settings: Settings, store: Store | None = None) -> FastAPI:
    """With ``store`` given the caller owns its lifecycle (tests); otherwise the app does."""
    owned = store is None
    the_store = store or Store(settings.zookeeper, settings.root)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if owned:
            the_store.start()
        yield
        if owned:
            the_store.stop()

    app = FastAPI(title="PVC API", version="1", lifespan=lifespan)
    app.state.store = the_store
    app.state.settings = settings
    install_handlers(app)
    app.include_router(health.router)
    app.include_router(apply.router)
    app.include_router(resources.build_router())
    return app
