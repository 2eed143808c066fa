"""The server's version, for ``pvcctl version`` (like kubectl's /version)."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import Field

from api.routes.resources import API_PREFIX
from schemas import API_VERSION
from schemas.meta import Model
from schemas.version import pvc_version

router = APIRouter()


class VersionInfo(Model):
    server: str = Field(description="the PVC version pvcapid runs")
    api_version: str = Field(description="the API group/version it serves")


@router.get(f"{API_PREFIX}/version", tags=["health"])
def version() -> VersionInfo:
    return VersionInfo(server=pvc_version(), api_version=API_VERSION)
