"""Composition root of the demand service."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from fastapi import FastAPI

from services.demand import api, consumers, events, jobs, metrics
from services.demand.pipeline.views import ViewCache
from services.demand.settings import DemandSettings
from shared.db import utcnow
from shared.runtime import ServiceRuntime, create_service_app

DESCRIPTION = (
    "Anchors and their forward demand, the aggregated pipeline with disclosure control, "
    "bulk imports (CSV, JSON lines, OCDS), the OCDS export, and matching with incubated enterprises."
)


def create_app(
    settings: DemandSettings | None = None, *, clock: Callable[[], datetime] | None = None
) -> FastAPI:
    """The demand service; ``clock`` (aware UTC now) is the stale-lines job's, replaceable so that
    whole-system tests can let a tender date pass."""
    settings = settings or DemandSettings()
    runtime = ServiceRuntime(
        settings, consumers=consumers.CONSUMERS, jobs=jobs.jobs(settings, clock or utcnow)
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
    app.state.pipeline_views = ViewCache(settings.pipeline_view_cache_size)
    return app
