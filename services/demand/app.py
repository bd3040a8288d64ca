"""Composition root of the demand service."""

from __future__ import annotations

from fastapi import FastAPI

from services.demand import api, events
from services.demand.settings import DemandSettings
from shared.runtime import ServiceRuntime, create_service_app


def create_app(settings: DemandSettings | None = None) -> FastAPI:
    settings = settings or DemandSettings()
    runtime = ServiceRuntime(settings, consumers=events.CONSUMERS)
    return create_service_app(
        runtime,
        title="Seedbed demand service",
        version="1.0.0",
        description="",
        routers=[api.router],
        events=events.PUBLISHED,
    )
