"""Liveness for load balancers and the CLI."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from api.deps import StoreDep

router = APIRouter()


@router.get("/healthz", tags=["health"])
def healthz(store: StoreDep) -> Any:
    if not store.connected:
        return JSONResponse({"status": "unavailable", "zookeeper": "disconnected"}, status_code=503)
    return {"status": "ok", "zookeeper": "connected"}
