"""Composition root of the enterprises service."""

from __future__ import annotations

from fastapi import FastAPI

from services.enterprises import api, consumers, events
from services.enterprises.jobs import periodic_jobs
from services.enterprises.settings import EnterprisesSettings
from shared.runtime import ServiceRuntime, create_service_app

DESCRIPTION = (
    "Enterprises, cohorts and tender-readiness milestones: the default catalogue and staff "
    "definitions, the milestone workflow (submit, verify, reject, expire) and readiness overall "
    "or for a public demand line."
)


def create_app(settings: EnterprisesSettings | None = None) -> FastAPI:
    settings = settings or EnterprisesSettings()
    runtime = ServiceRuntime(
        settings,
        consumers=consumers.consumer_specs(settings.expiry_warning),
        jobs=periodic_jobs(settings),
    )
    return create_service_app(
        runtime,
        title="Seedbed enterprises service",
        version="1.0.0",
        description=DESCRIPTION,
        routers=[api.router],
        events=events.PUBLISHED,
    )
