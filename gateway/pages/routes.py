"""The pages' router and ``install(app)``: which routes, in which order, behind ``admitted``.

The routes live by subject (``pipeline_pages``, ``line_pages``, ``anchor_pages``,
``impact_pages``); this module puts them behind the rate limit and key, out of the OpenAPI
document, and wires the static files, the error page and the caches into the gateway's app.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, FastAPI
from fastapi.responses import Response
from fastapi.staticfiles import StaticFiles

from gateway.pages import anchor_pages, impact_pages, line_pages, pipeline_pages
from gateway.pages.admission import admitted
from gateway.pages.pipeline_pages import FilterChoices, PipelineFigures, RenderedPipeline
from gateway.pages.reader import Lru
from gateway.pages.rendering import STATIC_DIR, STATIC_PREFIX, PageError, error_page
from gateway.settings import GatewaySettings

router = APIRouter(dependencies=[Depends(admitted)], include_in_schema=False)
# FastAPI matches routes in the order they are added: the pipeline, its lines, the anchors, impact.
router.include_router(pipeline_pages.router)
router.include_router(line_pages.router)
router.include_router(anchor_pages.router)
router.include_router(impact_pages.router)


class _Static(StaticFiles):
    """The stylesheet and icon, cached for a year (their URLs change with their content)."""

    async def get_response(self, path: str, scope: Any) -> Response:
        response = await super().get_response(path, scope)
        if response.status_code == 200:
            response.headers["Cache-Control"] = "public, max-age=31536000, immutable"
            response.headers["X-Content-Type-Options"] = "nosniff"
        return response


def install(app: FastAPI, settings: GatewaySettings) -> None:
    """Add the pages to the gateway's app: the routes, the static files, the error page."""
    app.include_router(router)
    app.mount(STATIC_PREFIX, _Static(directory=STATIC_DIR), name="pages-static")
    app.add_exception_handler(PageError, error_page)  # type: ignore[arg-type]
    app.state.pages_choices = FilterChoices()
    app.state.pages_figures = Lru[PipelineFigures](settings.pages_cache_size)
    app.state.pages_rendered = Lru[RenderedPipeline](settings.pages_cache_size)


__all__ = ["install", "router"]
