"""Composition root of the mentoring service."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from fastapi import FastAPI

from services.mentoring import api, consumers, events, jobs
from services.mentoring.settings import MentoringSettings
from shared.db import utcnow
from shared.runtime import ServiceRuntime, create_service_app

Clock = Callable[[], datetime]


def create_app(settings: MentoringSettings | None = None, *, clock: Clock | None = None) -> FastAPI:
    """The mentoring service; ``clock`` (aware UTC ``now``) is replaceable so that rules about
    notice, weeks and reminders can be checked on fixed dates."""
    settings = settings or MentoringSettings()
    clock = clock or utcnow
    runtime = ServiceRuntime(
        settings,
        consumers=consumers.CONSUMERS,
        jobs=[jobs.reminder_job(settings, clock)],
    )
    app = create_service_app(
        runtime,
        title="Seedbed mentoring service",
        version="1.0.0",
        description="Mentors, availability, free slots, bookings that never overlap, outcomes, "
        "calendars, reminders and mentor recommendations.",
        routers=[api.router],
        events=events.PUBLISHED,
    )
    app.state.clock = clock
    app.state.mentoring_settings = settings
    return app
