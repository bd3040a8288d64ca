"""Composition root of the mentoring service."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import datetime

from fastapi import FastAPI

from services.mentoring import api, events, reminders
from services.mentoring.settings import MentoringSettings
from shared.db import is_sqlite_url, utcnow
from shared.runtime import ServiceRuntime, create_service_app

Clock = Callable[[], datetime]


def create_app(settings: MentoringSettings | None = None, *, clock: Clock | None = None) -> FastAPI:
    """The mentoring service; ``clock`` (aware UTC ``now``) is replaceable so that rules about
    notice, weeks and reminders can be checked on fixed dates."""
    settings = settings or MentoringSettings()
    clock = clock or utcnow
    runtime = ServiceRuntime(
        settings,
        consumers=events.CONSUMERS,
        jobs=[reminders.reminder_job(settings, clock)],
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
    app.router.lifespan_context = _stopping_surely(runtime)
    app.state.clock = clock
    app.state.mentoring_settings = settings
    # SQLite has one writer at a time: this process's write requests queue here (see api.py).
    app.state.sqlite_write_turn = asyncio.Lock() if is_sqlite_url(settings.database_url) else None
    return app


def _stopping_surely(runtime: ServiceRuntime) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """The runtime's lifespan, with its background tasks surely stopped before it stops them.

    On Python 3.11, ``asyncio.wait_for`` (inside nats-py's requests and fetches) loses a
    cancellation that arrives as the awaited reply does; the kit's consumer and relay loops
    then catch the resulting error and carry on, and ``stop()`` waits for them forever (seen
    as shutdowns that hang). Until the kit re-raises in that case, cancel them here until they
    end. Remove once shared/inbox.py and shared/outbox.py handle it.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with runtime.lifespan(app):
            try:
                yield
            finally:
                await _cancel_until_done(_background_tasks(runtime))

    return lifespan


def _background_tasks(runtime: ServiceRuntime) -> list[asyncio.Task[None] | None]:
    tasks = [getattr(consumer, "_task", None) for consumer in runtime.consumers]
    tasks += [getattr(runtime.relay, "_task", None), getattr(runtime.relay, "_marker", None)]
    return [*tasks, *getattr(runtime, "_job_tasks", [])]


async def _cancel_until_done(tasks: Iterable[asyncio.Task[None] | None]) -> None:
    pending = {task for task in tasks if task is not None and not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=0.5)
