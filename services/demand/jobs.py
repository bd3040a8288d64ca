"""Periodic jobs of the demand service (every replica runs them; each is replica-safe)."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime

from services.demand import metrics
from services.demand.pipeline import release
from services.demand.service import lines
from services.demand.settings import DemandSettings
from shared.db import Database, utcnow
from shared.runtime import PeriodicJob, ServiceRuntime

Clock = Callable[[], datetime]


async def publish_pipeline(runtime: ServiceRuntime) -> None:
    """Release changed public figures, and confidential blocks when their cadence is due (the
    release lock keeps replicas apart)."""
    settings = runtime.settings
    assert isinstance(settings, DemandSettings)
    started = time.perf_counter()
    if await release.publish_snapshot(runtime.database, settings) is not None:
        metrics.PIPELINE_RELEASE_DURATION.observe(time.perf_counter() - started)


async def mark_stale_lines(database: Database, settings: DemandSettings, *, now: datetime) -> int:
    """Mark every draft or planned line whose expected tender date is before ``now``'s day stale,
    batch by batch; returns how many this run marked. Replica-safe: rows are claimed with SKIP
    LOCKED on PostgreSQL and marked only if still unmarked."""
    marked = 0
    while True:
        async with database.transaction() as session:
            found, done = await lines.mark_stale_lines(
                session,
                today=now.date(),
                now=now,
                leave_pipeline=settings.stale_lines_leave_pipeline,
                batch=settings.stale_lines_batch_size,
            )
        marked += done
        # Stop when nothing is due, or when everything due is in another replica's hands.
        if found < settings.stale_lines_batch_size or done == 0:
            return marked


def jobs(settings: DemandSettings, clock: Clock = utcnow) -> list[PeriodicJob]:
    """The periodic jobs this process runs; ``clock`` (aware UTC now) is replaceable so that tests
    can let tender dates pass."""

    async def stale_lines(runtime: ServiceRuntime) -> None:
        await mark_stale_lines(runtime.database, settings, now=clock())

    found: list[PeriodicJob] = []
    if settings.pipeline_publisher:
        found.append(PeriodicJob("pipeline-release", settings.pipeline_poll_seconds, publish_pipeline))
    if settings.stale_lines_job:
        found.append(PeriodicJob("stale-lines", settings.stale_lines_poll_seconds, stale_lines))
    return found
