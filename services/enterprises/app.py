"""Composition root of the enterprises service."""

from __future__ import annotations

from fastapi import FastAPI

from services.enterprises import api, events
from services.enterprises.settings import EnterprisesSettings
from shared.runtime import ServiceRuntime, create_service_app


def create_app(settings: EnterprisesSettings | None = None) -> FastAPI:
    settings = settings or EnterprisesSettings()
    runtime = ServiceRuntime(settings, consumers=events.CONSUMERS)
    return create_service_app(
        runtime,
        title="Seedbed enterprises service",
        version="1.0.0",
        description="",
        routers=[api.router],
        events=events.PUBLISHED,
    )
