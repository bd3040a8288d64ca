"""Composition root of the demand service."""

from __future__ import annotations

import time

from fastapi import FastAPI

from services.demand import api, consumers, events, metrics, pipeline, service
from services.demand.settings import DemandSettings
from shared.runtime import PeriodicJob, ServiceRuntime, create_service_app

DESCRIPTION = (
    "Anchors and their forward demand, the aggregated pipeline with disclosure control, "
    "bulk imports (CSV, JSON lines, OCDS), the OCDS export, and matching with incubated enterprises."
)


async def _publish_pipeline(runtime: ServiceRuntime) -> None:
    settings = runtime.settings
    assert isinstance(settings, DemandSettings)
    started = time.perf_counter()
    if await service.refresh_pipeline(runtime.database, settings) is not None:
        metrics.PIPELINE_RELEASE_DURATION.observe(time.perf_counter() - started)


def create_app(settings: DemandSettings | None = None) -> FastAPI:
    settings = settings or DemandSettings()
    runtime = ServiceRuntime(
        settings,
        consumers=consumers.CONSUMERS,
        jobs=[PeriodicJob("pipeline-snapshot", settings.pipeline_poll_seconds, _publish_pipeline)]
        if settings.pipeline_publisher
        else [],
    )
    app = create_service_app(
        runtime,
        title="Seedbed demand service",
        version="1.0.0",
        description=DESCRIPTION,
        routers=[api.router],
        events=events.PUBLISHED,
    )
    runtime.metrics.add(metrics.snapshot_age(runtime))
    app.state.pipeline_views = pipeline.ViewCache(settings.pipeline_view_cache_size)
    return app
