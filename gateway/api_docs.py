"""``/docs`` (Swagger UI) and ``/redoc`` (ReDoc) of the merged OpenAPI document, offline.

Their scripts, style sheet and icon come from the installed ``fastapi-offline`` package,
served under ``/docs/assets``, so the pages work on a machine without a network and tell no
CDN who reads them; FastAPI's own page builders write the HTML. ``/api/v1/docs`` is the same
Swagger UI.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Final

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS_PATH: Final = "/docs/assets"
ASSETS_DIR: Final = Path(str(files("fastapi_offline").joinpath("static")))
TITLE: Final = "Seedbed API"


def _swagger(openapi_url: str) -> HTMLResponse:
    return get_swagger_ui_html(
        openapi_url=openapi_url,
        title=f"{TITLE}: Swagger UI",
        swagger_js_url=f"{ASSETS_PATH}/swagger-ui-bundle.js",
        swagger_css_url=f"{ASSETS_PATH}/swagger-ui.css",
        swagger_favicon_url=f"{ASSETS_PATH}/favicon.png",
        swagger_ui_parameters={"persistAuthorization": True},
    )


def install_api_docs(app: FastAPI, api_prefix: str) -> None:
    """Serve the pages and their assets on ``app``; the document is at ``<prefix>/openapi.json``."""
    app.mount(ASSETS_PATH, StaticFiles(directory=ASSETS_DIR), name="docs-assets")

    async def swagger_ui() -> HTMLResponse:
        return _swagger("/openapi.json")

    async def swagger_ui_under_api() -> HTMLResponse:
        return _swagger(f"{api_prefix}/openapi.json")

    async def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url="/openapi.json",
            title=f"{TITLE}: ReDoc",
            redoc_js_url=f"{ASSETS_PATH}/redoc.standalone.js",
            redoc_favicon_url=f"{ASSETS_PATH}/favicon.png",
            with_google_fonts=False,
        )

    app.add_api_route("/docs", swagger_ui, include_in_schema=False)
    app.add_api_route(f"{api_prefix}/docs", swagger_ui_under_api, include_in_schema=False)
    app.add_api_route("/redoc", redoc, include_in_schema=False)
