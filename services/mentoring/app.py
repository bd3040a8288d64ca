"""Composition root of the mentoring service."""

from __future__ import annotations

from fastapi import FastAPI

from services.mentoring import api, events
from services.mentoring.settings import MentoringSettings
from shared.runtime import ServiceRuntime, create_service_app


def create_app(settings: MentoringSettings | None = None) -> FastAPI:
    settings = settings or MentoringSettings()
    runtime = ServiceRuntime(settings, consumers=events.CONSUMERS)
    return create_service_app(
        runtime,
        title="Seedbed mentoring service",
        version="1.0.0",
        description="",
        routers=[api.router],
        events=events.PUBLISHED,
    )
