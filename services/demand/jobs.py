"""Periodic jobs of the demand service (every replica runs them; each is replica-safe)."""

from __future__ import annotations

import time

from services.demand import metrics
from services.demand.pipeline import release
from services.demand.settings import DemandSettings
from shared.runtime import PeriodicJob, ServiceRuntime


async def publish_pipeline(runtime: ServiceRuntime) -> None:
    """Release changed public figures, and confidential blocks when their cadence is due (the
    release lock keeps replicas apart)."""
    settings = runtime.settings
    assert isinstance(settings, DemandSettings)
    started = time.perf_counter()
    if await release.publish_snapshot(runtime.database, settings) is not None:
        metrics.PIPELINE_RELEASE_DURATION.observe(time.perf_counter() - started)


def jobs(settings: DemandSettings) -> list[PeriodicJob]:
    if not settings.pipeline_publisher:
        return []
    return [PeriodicJob("pipeline-release", settings.pipeline_poll_seconds, publish_pipeline)]
