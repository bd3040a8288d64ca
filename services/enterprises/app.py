"""Composition root of the enterprises service."""

from __future__ import annotations

import asyncio
import contextlib

from fastapi import FastAPI

from services.enterprises import api, events
from services.enterprises.jobs import periodic_jobs
from services.enterprises.settings import EnterprisesSettings
from shared.runtime import ServiceRuntime, create_service_app

DESCRIPTION = (
    "Enterprises, cohorts and tender-readiness milestones: the default catalogue and staff "
    "definitions, the milestone workflow (submit, verify, reject, expire) and readiness overall "
    "or for a public demand line."
)


class EnterprisesRuntime(ServiceRuntime):
    """The kit's runtime, with a shutdown that cannot hang on a lost cancellation.

    On Python 3.11 ``asyncio.wait_for`` (inside nats-py) can swallow a cancellation that
    arrives as its reply lands; the kit's consumer loop then treats the reply's error as
    transient and keeps going, and ``stop()`` waits for it forever. Until the kit re-raises
    in that case, cancel the background tasks again while stopping.
    """

    async def stop(self) -> None:
        watchdog = asyncio.create_task(self._cancel_again_until_stopped())
        try:
            await super().stop()
        finally:
            watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watchdog

    async def _cancel_again_until_stopped(self) -> None:
        while True:
            await asyncio.sleep(0.25)
            tasks = [getattr(c, "_task", None) for c in self.consumers]
            tasks.append(getattr(self.relay, "_task", None))
            for task in tasks:
                if task is not None and not task.done() and task.cancelling():
                    task.cancel()


def create_app(settings: EnterprisesSettings | None = None) -> FastAPI:
    settings = settings or EnterprisesSettings()
    runtime = EnterprisesRuntime(
        settings,
        consumers=events.consumer_specs(settings.expiry_warning),
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
