"""Periodic jobs of the enterprises service: milestone expiry and readiness after catalogue changes.

Every replica runs them; each run is safe alongside another (see ``service.expiry`` and
``service.assessment.recompute_stale_readiness``).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import datetime, timedelta

from services.enterprises.service import assessment, expiry
from services.enterprises.settings import EnterprisesSettings
from shared.db import Database, utcnow
from shared.runtime import PeriodicJob, ServiceRuntime


@dataclass(frozen=True)
class ExpiryRun:
    warned: int
    expired: int


async def run_expiry(
    database: Database, *, warning: timedelta, batch: int = 500, now: datetime | None = None
) -> ExpiryRun:
    """Warn of verifications entering the window, then expire lapsed ones, batch by batch
    (standing verifications of milestones whose renewal awaits review included)."""
    now = now or utcnow()
    warned = expired = 0
    # The milestones' own verifications, then the standing ones (renewals awaiting review).
    for step, standing in itertools.product((expiry.warn_expiring, expiry.expire_lapsed), (False, True)):
        while True:
            async with database.transaction() as session:
                done = await step(session, now=now, warning=warning, batch=batch, standing=standing)
            if step is expiry.warn_expiring:
                warned += done.changed
            else:
                expired += done.changed
            # Stop when nothing is due, or when everything due is in another replica's hands.
            if done.candidates == 0 or done.claimed == 0:
                break
    return ExpiryRun(warned, expired)


async def run_readiness_refresh(
    database: Database, *, warning: timedelta, batch: int = 1000, now: datetime | None = None
) -> tuple[int, int]:
    """Recompute every enterprise marked stale by a catalogue change: (recomputed, announced)."""
    recomputed = announced = 0
    while True:
        async with database.transaction() as session:
            seen, changed = await assessment.recompute_stale_readiness(
                session, now=now or utcnow(), warning=warning, batch=batch
            )
        recomputed += seen
        announced += changed
        if seen == 0:
            return recomputed, announced


def periodic_jobs(settings: EnterprisesSettings) -> list[PeriodicJob]:
    async def milestone_expiry(runtime: ServiceRuntime) -> None:
        await run_expiry(runtime.database, warning=settings.expiry_warning, batch=settings.expiry_batch_size)

    async def readiness(runtime: ServiceRuntime) -> None:
        await run_readiness_refresh(
            runtime.database, warning=settings.expiry_warning, batch=settings.readiness_batch_size
        )

    if not settings.run_jobs:
        return []
    return [
        PeriodicJob("milestone-expiry", settings.expiry_job_interval_seconds, milestone_expiry),
        PeriodicJob("readiness-refresh", settings.readiness_job_interval_seconds, readiness),
    ]
