"""The release job: public figures at every run, the confidential part on its cadence.

Holding the release lock, in one transaction: the changed public cells are released
(their rollup rows updated) as they are; when the confidential cadence is due, each
block (CPV division, tender quarter) whose aggregate-only cells changed moves to its
live state only if :func:`services.demand.disclosure.may_release` allows it against every
state of it ever published, else keeps its released state; then the snapshot is recorded
and ``demand.pipeline.published.v1`` added to the outbox. A cell or block the job cannot
process is skipped and recorded in ``pipeline_release_failures`` (and logged), so the rest
is released. Only what changed is touched, so a release costs what changed, not the size
of the pipeline. Replicas may all run it.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from services.demand import events
from services.demand.disclosure import Rules, may_release
from services.demand.pipeline import storage
from services.demand.pipeline.cells import ViewParams
from services.demand.pipeline.views import (
    CHANGES_KEPT,
    RawFigures,
    figures_of,
    moved_by_changes,
    raw_view,
    rules_json,
)
from services.demand.settings import DemandSettings
from shared import outbox
from shared.db import Database, utcnow

log = logging.getLogger("seedbed.demand.pipeline")

# Above this many changed rows a release refreshes the planner's statistics.
LARGE_RELEASE = 10_000


def rules_of(settings: DemandSettings) -> Rules:
    return Rules(
        min_anchors=settings.pipeline_min_anchors,
        dominance_share=settings.pipeline_dominance_share,
        p_percent=settings.pipeline_p_percent,
    )


@dataclass(frozen=True)
class Snapshot:
    snapshot_id: str
    version: int
    generated_at: datetime
    lines_count: int | None
    totals: dict[str, Any]
    blocks: int


@dataclass
class ReleaseReport:
    """What one run of the job did."""

    snapshot: Snapshot | None = None
    public_cells: int = 0
    blocks_released: int = 0
    blocks_held: int = 0
    skipped: list[str] = field(default_factory=list)


async def release_confidential(session: AsyncSession, rules: Rules, report: ReleaseReport) -> bool:
    """Move every changed block to its live state where the rules allow; True if one moved."""
    moved = False
    for block in await storage.changed_blocks(session):
        try:
            async with session.begin_nested():  # a block that fails leaves the others' work intact
                live = await storage.live_block(session, block)
                published, last = await storage.published_states(session, block)
                state = {anchor: (f.lines, f.value_pence, f.annualised_pence) for anchor, f in live.items()}
                if state == await storage.released_state(session, block) and (published or not state):
                    await storage.mark_block_released(session, block)  # nothing to show moved
                    continue
                if not may_release(state, published, rules):
                    report.blocks_held += 1
                    continue
                await storage.release_block(session, block, live, last + 1, published)
                report.blocks_released += 1
                moved = True
        except Exception as exc:
            log.exception("pipeline block skipped", extra={"block": "/".join(block)})
            await storage.record_block_failure(session, block, f"{type(exc).__name__}: {exc}")
            report.skipped.append("/".join(block))
    return moved


async def release_snapshot(session: AsyncSession, rules: Rules, *, confidential: bool) -> ReleaseReport:
    """Release what changed and record a snapshot (``report.snapshot`` None when nothing did).

    Run inside a write transaction holding the release lock; ``confidential``: the
    confidential cadence is due.
    """
    report = ReleaseReport()
    latest = await storage.latest_snapshot(session)
    for key, error in await storage.skip_bad_cells(session):
        log.error("pipeline cell skipped", extra={"cell_key": key, "error": error})
        report.skipped.append(key)
    report.public_cells = await storage.changed_cells(session)
    version = (latest.version if latest is not None else 0) + 1
    await storage.roll_up_changes(session, version)
    await storage.release_changed_cells(session)
    moved = await release_confidential(session, rules, report) if confidential else False
    now = utcnow()
    if not report.public_cells and not moved and latest is not None:
        if confidential:
            await storage.note_confidential_release(session, latest.version, now)
        return report
    if report.public_cells > LARGE_RELEASE:
        await storage.refresh_statistics(session)

    snapshot_id = str(uuid.uuid4())
    raw = None
    if not moved and latest is not None and latest.raw_totals is not None:
        # The previous totals moved by this release's changes: no pass over the whole pipeline.
        previous = RawFigures({(): list(latest.raw_totals)}, list(latest.raw_totals))
        raw = await moved_by_changes(session, ViewParams(), previous, latest.version, version)
    if raw is None:
        raw = await raw_view(session, ViewParams())
    totals = figures_of(ViewParams(), raw).totals
    blocks = await storage.included_blocks(session)
    await storage.insert_snapshot(
        session,
        version=version,
        id=snapshot_id,
        generated_at=now,
        lines_count=totals["count"],
        totals=totals,
        rules=rules_json(rules),
        blocks=blocks,
        confidential_at=now if confidential else (latest.confidential_at if latest is not None else None),
        raw_totals=raw.totals,
        confidential_moved=moved,
    )
    await storage.forget_changes(session, before=version - CHANGES_KEPT + 1)
    report.snapshot = Snapshot(snapshot_id, version, now, totals["count"], totals, blocks)
    return report


async def confidential_due(database: Database, settings: DemandSettings) -> bool:
    async with database.transaction(write=False) as session:
        latest = await storage.latest_snapshot(session)
    if latest is None or latest.confidential_at is None:
        return True
    return utcnow() - latest.confidential_at >= timedelta(seconds=settings.pipeline_release_seconds)


async def publish_snapshot(
    database: Database, settings: DemandSettings, *, force: bool = False
) -> int | None:
    """Release the changed public figures, and the confidential part when its cadence is due
    (``force``: now). Returns the new snapshot version, or None when nothing changed."""
    report = await run_release(database, settings, force=force)
    return report.snapshot.version if report is not None and report.snapshot is not None else None


async def run_release(
    database: Database, settings: DemandSettings, *, force: bool = False
) -> ReleaseReport | None:
    """One run of the job; None when another replica holds the pipeline."""
    confidential = force or await confidential_due(database, settings)
    if not confidential:
        async with database.transaction(write=False) as session:
            if not await storage.pending_public(session) and await storage.latest_version(session):
                return ReleaseReport()
    rules = rules_of(settings)
    try:
        async with database.transaction() as session:
            if not await storage.take_release_lock(session, wait_seconds=3.0 if force else None):
                return None
            report = await release_snapshot(session, rules, confidential=confidential)
            snapshot = report.snapshot
            if snapshot is not None:
                await outbox.add(
                    session,
                    events.pipeline_event(
                        snapshot.snapshot_id,
                        snapshot.version,
                        snapshot.generated_at,
                        snapshot.lines_count,
                        snapshot.totals,
                    ),
                )
    except DBAPIError as exc:
        if "lock timeout" in str(exc).lower() or "LockNotAvailable" in type(exc.orig).__name__:
            log.info("pipeline release postponed: writers hold the pipeline")
            return None
        raise
    if report.snapshot is not None:
        log.info(
            "pipeline snapshot published",
            extra={
                "version": report.snapshot.version,
                "public_cells": report.public_cells,
                "blocks_released": report.blocks_released,
                "blocks_held": report.blocks_held,
                "skipped": len(report.skipped),
            },
        )
    return report
