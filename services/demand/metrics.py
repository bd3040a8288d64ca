"""The demand service's own metrics: how long a pipeline release takes, and how old the
published snapshot is (a snapshot job that stopped shows as an age that only grows)."""

from __future__ import annotations

import sqlalchemy as sa
from prometheus_client import Gauge, Histogram

from services.demand.models import pipeline_snapshots
from shared.db import utcnow
from shared.metrics import Refresher
from shared.runtime import ServiceRuntime

PIPELINE_RELEASE_DURATION = Histogram(
    "seedbed_pipeline_release_duration_seconds",
    "Time to plan and release a pipeline snapshot (debounced calls that release nothing are not counted).",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
)
PIPELINE_SNAPSHOT_AGE = Gauge(
    "seedbed_pipeline_snapshot_age_seconds",
    "Age of the latest published pipeline snapshot (absent before the first).",
    multiprocess_mode="mostrecent",
)


def snapshot_age(runtime: ServiceRuntime) -> Refresher:
    query = sa.select(sa.func.max(pipeline_snapshots.c.generated_at))

    async def refresh() -> None:
        async with runtime.database.transaction(write=False) as session:
            latest = await session.scalar(query)
        if latest is not None:
            PIPELINE_SNAPSHOT_AGE.set(max(0.0, (utcnow() - latest).total_seconds()))

    return refresh
