"""Swagger UI at /docs with no internet access, and the bearer scheme it authorizes with.

The page and its assets come from the swagger-ui-py package's copy of Swagger UI (5.x,
which reads OpenAPI 3.1), not from a CDN. The OpenAPI document always declares the
``bearer`` scheme, so the Authorize button is there; it requires it on every operation
only when the server has tokens configured (without tokens nothing asks for one).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import swagger_ui
from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

DOCS_PATH = "/docs"
ASSETS_PATH = f"{DOCS_PATH}/assets"
OPENAPI_PATH = "/openapi.json"
SWAGGER_UI_FILES = Path(swagger_ui.__file__).resolve().parent / "static"
BEARER = "bearer"
BEARER_SCHEME: dict[str, Any] = {
    "type": "http",
    "scheme": "bearer",
    "description": "A token from pvcapid's `tokens:` (admin, or readonly for GET only)",
}


def is_docs_path(path: str) -> bool:
    """The docs page, its assets and the OpenAPI document: a browser loads them with no
    token, so they are open like /healthz (they hold no cluster data)."""
    return path in (DOCS_PATH, OPENAPI_PATH) or path.startswith(f"{ASSETS_PATH}/")


def install_docs(app: FastAPI) -> None:
    app.mount(ASSETS_PATH, StaticFiles(directory=SWAGGER_UI_FILES), name="swagger-ui")

    @app.get(DOCS_PATH, include_in_schema=False)
    def swagger_ui_page() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=OPENAPI_PATH,
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{ASSETS_PATH}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS_PATH}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS_PATH}/favicon-32x32.png",
            swagger_ui_parameters={"persistAuthorization": True},
        )


def declare_bearer(schema: dict[str, Any], required: bool) -> None:
    """Add the bearer scheme to an OpenAPI document; with ``required``, every operation
    but the open ones (/healthz) needs it."""
    schema.setdefault("components", {}).setdefault("securitySchemes", {})[BEARER] = BEARER_SCHEME
    if not required:
        return
    for path, operations in schema.get("paths", {}).items():
        for operation in operations.values():
            if isinstance(operation, dict):
                operation["security"] = [] if path == "/healthz" else [{BEARER: []}]
