"""The snapshot job: release the pipeline's live figures under freshly formed protection blocks.

The blocks are formed from a consistent read without any lock (the slow part, its CPU
work in a thread); then, holding the release lock, the job checks that no
aggregate-only figure moved meanwhile (else it plans again), releases the changed
cells, updates the rollup, rewrites only the blocks that changed (block ids are
stable), records the snapshot and adds ``demand.pipeline.published.v1`` to the
outbox, all in one transaction. Replicas may all run it.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from services.demand import events
from services.demand.disclosure import Atom, Rules
from services.demand.pipeline import storage
from services.demand.pipeline.cells import ViewParams, atom_key, block_key, protection_blocks
from services.demand.pipeline.views import rules_json, view_figures
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
class ReleasePlan:
    """The protection blocks for the figures about to be released, worked out before the release.

    ``aggregate_only_changes`` are the pending aggregate-only cells it was worked out from; the
    release goes ahead with this plan only if they are still exactly those.
    """

    aggregate_only_changes: dict[str, tuple[int, int]]
    blocks: int
    removed: list[str]
    changed: dict[str, tuple[int, bool, Atom]]
    affected_blocks: set[int]


class StalePlan(Exception):
    """Aggregate-only figures changed between planning a release and making it."""


async def plan_release(session: AsyncSession, rules: Rules) -> ReleasePlan:
    """Form the blocks of the figures as they would be released now (reads only)."""
    contributions, pending = await storage.aggregate_only_figures(session)
    # CPU work: in a thread, so the service keeps answering meanwhile.
    blocks = await asyncio.to_thread(protection_blocks, contributions, rules)
    wanted: dict[str, tuple[int, bool, Atom]] = {}
    for block in blocks:
        ident = block_key(block)
        for atom in block.atoms:
            wanted[atom_key(atom)] = (ident, block.publishable, atom)
    current = await storage.current_blocks(session)
    removed = [key for key in current if key not in wanted]
    changed = {key: v for key, v in wanted.items() if current.get(key) != (v[0], v[1])}
    affected = {current[key][0] for key in removed} | {current[key][0] for key in changed if key in current}
    affected |= {v[0] for v in changed.values()}
    return ReleasePlan(pending, len(blocks), removed, changed, affected)


async def release_snapshot(
    session: AsyncSession, rules: Rules, plan: ReleasePlan | None = None
) -> Snapshot | None:
    """Release the live figures and record a new snapshot, or None when nothing changed.

    Run inside a write transaction holding the release lock. With a ``plan`` worked out
    beforehand (outside the lock), raises :class:`StalePlan` if aggregate-only figures moved
    since; without one, plans here.
    """
    latest = await storage.latest_snapshot(session)
    if plan is None:
        plan = await plan_release(session, rules)
    elif await storage.pending_aggregate_only(session) != plan.aggregate_only_changes:
        raise StalePlan
    changed = await storage.changed_cells(session)
    await storage.roll_up_changes(session)
    await storage.release_changed_cells(session)
    if not changed and latest is not None:
        return None
    await storage.write_blocks(session, plan.removed, plan.changed, plan.affected_blocks)
    if changed > LARGE_RELEASE or len(plan.changed) > LARGE_RELEASE:
        await storage.refresh_statistics(session)

    version = (latest.version if latest is not None else 0) + 1
    generated_at = utcnow()
    snapshot_id = str(uuid.uuid4())
    totals = (await view_figures(session, ViewParams(), rules)).totals
    lines_count = totals["count"]
    await storage.insert_snapshot(
        session,
        version=version,
        id=snapshot_id,
        generated_at=generated_at,
        lines_count=lines_count,
        totals=totals,
        rules=rules_json(rules),
        blocks=plan.blocks,
    )
    return Snapshot(snapshot_id, version, generated_at, lines_count, totals, plan.blocks)


async def publish_snapshot(
    database: Database, settings: DemandSettings, *, force: bool = False
) -> int | None:
    """Publish a new pipeline snapshot when the pipeline changed and the changes settled.

    Debounced: waits until no change came for ``pipeline_debounce_seconds``, or the
    oldest unpublished change is ``pipeline_max_delay_seconds`` old; ``force`` skips the
    wait. Returns the new snapshot version, or None.
    """
    async with database.transaction(write=False) as session:
        pending = await storage.pending_changes(session)
        latest = await storage.latest_version(session)
    if latest and not pending.cells:
        return None
    now = utcnow()
    overdue = bool(
        pending.first_change
        and now - pending.first_change >= timedelta(seconds=settings.pipeline_max_delay_seconds)
    )
    quiet = not pending.last_change or now - pending.last_change >= timedelta(
        seconds=settings.pipeline_debounce_seconds
    )
    if not (force or overdue or quiet or not latest):
        return None
    rules = rules_of(settings)
    snapshot = None
    for attempt in range(3):
        plan = None
        if attempt < 2:
            # The blocks are formed outside the lock (the slow part); the release checks that the
            # aggregate-only figures they were formed from did not move meanwhile.
            async with database.transaction(write=False) as session:
                await storage.begin_consistent_read(session)
                plan = await plan_release(session, rules)
        try:
            async with database.transaction() as session:
                if not await storage.take_release_lock(
                    session, wait_seconds=3.0 if (force or overdue) else None
                ):
                    return None
                snapshot = await release_snapshot(session, rules, plan)
                if snapshot is None:
                    return None
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
            break
        except StalePlan:
            continue
        except DBAPIError as exc:
            if "lock timeout" in str(exc).lower() or "LockNotAvailable" in type(exc.orig).__name__:
                log.info("pipeline snapshot postponed: writers hold the pipeline")
                return None
            raise
    assert snapshot is not None
    log.info("pipeline snapshot published", extra={"version": snapshot.version, "blocks": snapshot.blocks})
    return snapshot.version
