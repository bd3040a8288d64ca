"""Queries and writes of the pipeline tables, and the lock between their writers and a release."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from services.demand.disclosure import State
from services.demand.models import (
    pipeline_cells,
    pipeline_changes,
    pipeline_confidential,
    pipeline_confidential_history,
    pipeline_release_failures,
    pipeline_rollup,
    pipeline_snapshots,
)
from services.demand.pipeline.cells import BlockFigures, BlockKey, CellDeltas
from shared.db import insert_of, is_postgres, utcnow

# Advisory lock on PostgreSQL: writers of pipeline cells share it, the snapshot job takes it
# alone, so a snapshot sees no half-applied transaction and never deadlocks with a writer.
PIPELINE_LOCK = 0x64656D616E64

ROLLUP_KEY = ("anchor_type", "cpv_group", "tender_quarter", "start_quarter", "cpv_division")
ROLLUP_MEASURES = ("lines", "value_pence", "annualised_pence", "vcse_lines", "sme_lines")


# --- live cells ----------------------------------------------------------------------------------


async def lock_for_writing(session: AsyncSession) -> None:
    """Writers of pipeline cells share the pipeline lock (PostgreSQL; SQLite has one writer)."""
    if is_postgres(session) and not session.info.get("pipeline_locked"):
        await session.execute(sa.select(sa.func.pg_advisory_xact_lock_shared(PIPELINE_LOCK)))
        session.info["pipeline_locked"] = True


async def apply_cell_deltas(session: AsyncSession, deltas: CellDeltas) -> int:
    """Add the deltas to the live cells in one bulk upsert, marking them for the next release."""
    now = utcnow()
    rows = [{**row, "dirty": True, "changed_at": now} for row in deltas.take_rows()]
    if not rows:
        return 0
    await lock_for_writing(session)
    statement = insert_of(session, pipeline_cells)
    c = pipeline_cells.c
    statement = statement.on_conflict_do_update(
        index_elements=[c.cell_key],
        set_={
            "lines": c.lines + statement.excluded.lines,
            "value_pence": c.value_pence + statement.excluded.value_pence,
            "annualised_pence": c.annualised_pence + statement.excluded.annualised_pence,
            "dirty": True,
            "changed_at": statement.excluded.changed_at,
        },
    )
    for start in range(0, len(rows), 1000):
        await session.execute(statement, rows[start : start + 1000])
    return len(rows)


async def pending_public(session: AsyncSession) -> int:
    """How many public cells changed since the last release."""
    c = pipeline_cells.c
    return int(
        await session.scalar(
            sa.select(sa.func.count())
            .select_from(pipeline_cells)
            .where(c.dirty.is_(True), c.aggregate_only.is_(False))
        )
        or 0
    )


# --- release -------------------------------------------------------------------------------------


async def take_release_lock(session: AsyncSession, *, wait_seconds: float | None) -> bool:
    """Take the pipeline lock alone (PostgreSQL): at once, or waiting up to ``wait_seconds``."""
    if not is_postgres(session):
        return True  # the SQLite write transaction already excludes every other writer
    if wait_seconds is None:
        return bool(await session.scalar(sa.select(sa.func.pg_try_advisory_xact_lock(PIPELINE_LOCK))))
    await session.execute(sa.text(f"SET LOCAL lock_timeout = '{int(wait_seconds * 1000)}ms'"))
    await session.execute(sa.select(sa.func.pg_advisory_xact_lock(PIPELINE_LOCK)))
    await session.execute(sa.text("SET LOCAL lock_timeout = 0"))
    return True


async def begin_consistent_read(session: AsyncSession) -> None:
    """Read the snapshot version, cells and blocks from one database snapshot (before any query)."""
    if is_postgres(session) and not session.in_transaction():
        await session.connection(execution_options={"isolation_level": "REPEATABLE READ"})


def _bad() -> sa.ColumnElement[bool]:
    """Cells whose live figures cannot be right (a negative sum, or value without lines)."""
    c = pipeline_cells.c
    return sa.or_(
        c.lines < 0,
        c.value_pence < 0,
        c.annualised_pence < 0,
        sa.and_(c.lines == 0, sa.or_(c.value_pence != 0, c.annualised_pence != 0)),
    )


def _releasable() -> sa.ColumnElement[bool]:
    """Changed public cells the release can process."""
    c = pipeline_cells.c
    return sa.and_(c.dirty.is_(True), c.aggregate_only.is_(False), sa.not_(_bad()))


async def skip_bad_cells(session: AsyncSession) -> list[tuple[str, str]]:
    """Set aside the changed public cells the release cannot process: recorded, logged by the
    caller, left out of this and later releases (their released figures stay) until they change
    again. (An aggregate-only one fails its block: see the release job.)"""
    c = pipeline_cells.c
    rows = (
        await session.execute(
            sa.select(c.cell_key, c.lines, c.value_pence, c.annualised_pence).where(
                c.dirty.is_(True), c.aggregate_only.is_(False), _bad()
            )
        )
    ).all()
    if not rows:
        return []
    now = utcnow()
    failures = [
        (
            row.cell_key,
            f"impossible figures: lines={row.lines} value_pence={row.value_pence} "
            f"annualised_pence={row.annualised_pence}",
        )
        for row in rows
    ]
    await session.execute(
        sa.insert(pipeline_release_failures),
        [{"at": now, "cell_key": key, "block": None, "error": error} for key, error in failures],
    )
    keys = [key for key, _ in failures]
    for start in range(0, len(keys), 500):
        await session.execute(
            sa.update(pipeline_cells).where(c.cell_key.in_(keys[start : start + 500])).values(dirty=False)
        )
    return failures


async def record_block_failure(session: AsyncSession, block: BlockKey, error: str) -> None:
    await session.execute(
        sa.insert(pipeline_release_failures).values(
            at=utcnow(), cell_key=None, block=f"{block[0]}/{block[1]}", error=error[:2000]
        )
    )


async def changed_cells(session: AsyncSession) -> int:
    """How many public cells changed their figures since the last release."""
    c = pipeline_cells.c
    return int(
        await session.scalar(
            sa.select(sa.func.count())
            .select_from(pipeline_cells)
            .where(
                _releasable(),
                sa.or_(
                    c.lines != c.released_lines,
                    c.value_pence != c.released_value_pence,
                    c.annualised_pence != c.released_annualised_pence,
                ),
            )
        )
        or 0
    )


def _changes(*leading: sa.ColumnElement[Any]) -> sa.Select[Any]:
    """What releasing the changed public cells moves, per anchor and rollup key (``leading``
    columns first)."""
    c = pipeline_cells.c
    grouping = [c.anchor_id, *(c[name] for name in ROLLUP_KEY)]
    return (
        sa.select(
            *leading,
            *grouping,
            sa.func.sum(c.lines - c.released_lines),
            sa.func.sum(c.value_pence - c.released_value_pence),
            sa.func.sum(c.annualised_pence - c.released_annualised_pence),
            sa.func.sum(sa.case((c.suitable_for_vcse.is_(True), c.lines - c.released_lines), else_=0)),
            sa.func.sum(sa.case((c.suitable_for_sme.is_(True), c.lines - c.released_lines), else_=0)),
        )
        # The changed cells' keys first: grouped by anchor, the planner would rather walk the
        # whole anchor index in order than read the few changed cells through their index.
        .where(c.cell_key.in_(sa.select(c.cell_key).where(_releasable())))
        .group_by(*grouping)
    )


async def roll_up_changes(session: AsyncSession, version: int) -> None:
    """Add what this release changes in the public cells to the rollup (before the released
    figures move), and record it as release ``version``'s changes."""
    columns = ["anchor_id", *ROLLUP_KEY, *ROLLUP_MEASURES]
    await session.execute(
        sa.insert(pipeline_changes).from_select(
            ["version", *columns], _changes(sa.literal(version, sa.Integer))
        )
    )
    statement = insert_of(session, pipeline_rollup).from_select(
        ["aggregate_only", *columns], _changes(sa.false())
    )
    r = pipeline_rollup.c
    statement = statement.on_conflict_do_update(
        index_elements=[
            r.anchor_id,
            r.aggregate_only,
            r.anchor_type,
            r.cpv_group,
            r.tender_quarter,
            r.start_quarter,
        ],
        set_={name: r[name] + statement.excluded[name] for name in ROLLUP_MEASURES},
    )
    await session.execute(statement)
    await session.execute(sa.delete(pipeline_rollup).where(r.lines == 0))


async def forget_changes(session: AsyncSession, before: int) -> None:
    """Drop the changes of releases before ``before`` (views older than that are computed again)."""
    await session.execute(sa.delete(pipeline_changes).where(pipeline_changes.c.version < before))


async def release_changed_cells(session: AsyncSession) -> None:
    """Copy the live figures of the changed public cells to the released ones; emptied cells go."""
    c = pipeline_cells.c
    await session.execute(sa.delete(pipeline_cells).where(_releasable(), c.lines == 0))
    await session.execute(
        sa.update(pipeline_cells)
        .where(_releasable())
        .values(
            released_lines=c.lines,
            released_value_pence=c.value_pence,
            released_annualised_pence=c.annualised_pence,
            dirty=False,
        )
    )


# --- the confidential part -----------------------------------------------------------------------


async def changed_blocks(session: AsyncSession) -> list[BlockKey]:
    """The blocks (CPV division, tender quarter) whose aggregate-only cells changed since they
    were last released (held-back blocks stay changed)."""
    c = pipeline_cells.c
    rows = await session.execute(
        sa.select(c.cpv_division, c.tender_quarter)
        .where(c.dirty.is_(True), c.aggregate_only.is_(True))
        .distinct()
        .order_by(c.cpv_division, c.tender_quarter)
    )
    return [(row.cpv_division, row.tender_quarter) for row in rows]


def _in_block(table: Any, block: BlockKey) -> sa.ColumnElement[bool]:
    return sa.and_(table.c.cpv_division == block[0], table.c.tender_quarter == block[1])


async def live_block(session: AsyncSession, block: BlockKey) -> dict[str, BlockFigures]:
    """The live aggregate-only figures of one block, per anchor."""
    c = pipeline_cells.c
    rows = await session.execute(
        sa.select(
            c.anchor_id,
            sa.func.sum(c.lines),
            sa.func.sum(c.value_pence),
            sa.func.sum(c.annualised_pence),
            sa.func.sum(sa.case((c.suitable_for_vcse.is_(True), c.lines), else_=0)),
            sa.func.sum(sa.case((c.suitable_for_sme.is_(True), c.lines), else_=0)),
            sa.func.max(sa.case((_bad(), 1), else_=0)),
        )
        .where(c.aggregate_only.is_(True), _in_block(pipeline_cells, block))
        .group_by(c.anchor_id)
    )
    figures: dict[str, BlockFigures] = {}
    for row in rows:
        if row[6]:
            raise ValueError(f"a cell of anchor {row.anchor_id} has impossible figures")
        lines, value, per_year, vcse, sme = (int(v or 0) for v in row[1:6])
        if lines or value:
            figures[row.anchor_id] = BlockFigures(lines, value, per_year, vcse, sme)
    return figures


async def published_states(session: AsyncSession, block: BlockKey) -> tuple[list[State], int]:
    """Every state of a block ever published (per anchor: lines, value, annualised value), and
    the last release number."""
    h = pipeline_confidential_history.c
    states: dict[int, dict[str, tuple[int, int, int]]] = {}
    for row in await session.execute(
        sa.select(h.release, h.anchor_id, h.lines, h.value_pence, h.annualised_pence).where(
            _in_block(pipeline_confidential_history, block)
        )
    ):
        state = states.setdefault(int(row.release), {})
        if row.anchor_id:
            state[row.anchor_id] = (int(row.lines), int(row.value_pence), int(row.annualised_pence))
    return list(states.values()), max(states, default=0)


async def released_state(session: AsyncSession, block: BlockKey) -> State:
    """The block's released state (per anchor: lines, value, annualised); empty when never included."""
    k = pipeline_confidential.c
    rows = await session.execute(
        sa.select(k.anchor_id, k.lines, k.value_pence, k.annualised_pence).where(
            _in_block(pipeline_confidential, block)
        )
    )
    return {row.anchor_id: (int(row.lines), int(row.value_pence), int(row.annualised_pence)) for row in rows}


async def release_block(
    session: AsyncSession,
    block: BlockKey,
    live: dict[str, BlockFigures],
    release: int,
    published: list[State],
) -> None:
    """Make ``live`` the released state of a block, and remember it (unless an equal state is)."""
    await session.execute(sa.delete(pipeline_confidential).where(_in_block(pipeline_confidential, block)))
    if live:
        await session.execute(
            sa.insert(pipeline_confidential),
            [
                {
                    "cpv_division": block[0],
                    "tender_quarter": block[1],
                    "anchor_id": anchor,
                    "lines": f.lines,
                    "value_pence": f.value_pence,
                    "annualised_pence": f.annualised_pence,
                    "vcse_lines": f.vcse_lines,
                    "sme_lines": f.sme_lines,
                }
                for anchor, f in sorted(live.items())
            ],
        )
    state = {anchor: (f.lines, f.value_pence, f.annualised_pence) for anchor, f in live.items()}
    if state not in published:  # an equal state adds no constraint: the history stays bounded
        await session.execute(
            sa.insert(pipeline_confidential_history),
            [
                {
                    "cpv_division": block[0],
                    "tender_quarter": block[1],
                    "release": release,
                    "anchor_id": anchor,
                    "lines": figures[0],
                    "value_pence": figures[1],
                    "annualised_pence": figures[2],
                }
                for anchor, figures in (sorted(state.items()) or [("", (0, 0, 0))])
            ],
        )
    await mark_block_released(session, block)


async def mark_block_released(session: AsyncSession, block: BlockKey) -> None:
    """The block's aggregate-only cells are released as they are; emptied cells go."""
    c = pipeline_cells.c
    where = [c.aggregate_only.is_(True), _in_block(pipeline_cells, block)]
    await session.execute(sa.delete(pipeline_cells).where(*where, c.lines == 0))
    await session.execute(
        sa.update(pipeline_cells)
        .where(*where, c.dirty.is_(True))
        .values(
            released_lines=c.lines,
            released_value_pence=c.value_pence,
            released_annualised_pence=c.annualised_pence,
            dirty=False,
        )
    )


async def included_blocks(session: AsyncSession) -> int:
    k = pipeline_confidential.c
    return int(
        await session.scalar(
            sa.select(sa.func.count()).select_from(
                sa.select(k.cpv_division, k.tender_quarter).distinct().subquery()
            )
        )
        or 0
    )


async def refresh_statistics(session: AsyncSession) -> None:
    """Fresh planner statistics after a large release. PostgreSQL: before autovacuum gets there.
    SQLite: statistics taken while most cells were changed (after an import, say) make its
    planner scan every cell for the few changed ones instead of using their partial index; the
    ANALYZE is sampled (``analysis_limit``), so its cost does not grow with the tables."""
    if is_postgres(session):
        await session.execute(sa.text("ANALYZE pipeline_cells, pipeline_rollup, pipeline_confidential"))
        return
    await session.execute(sa.text("PRAGMA analysis_limit = 1000"))
    for table in ("pipeline_cells", "pipeline_rollup", "pipeline_confidential"):
        await session.execute(sa.text(f"ANALYZE {table}"))


async def latest_snapshot(session: AsyncSession) -> sa.Row[Any] | None:
    return (
        await session.execute(
            sa.select(pipeline_snapshots).order_by(pipeline_snapshots.c.version.desc()).limit(1)
        )
    ).first()


async def snapshot_id(session: AsyncSession, version: int) -> str | None:
    s = pipeline_snapshots.c
    return await session.scalar(sa.select(s.id).where(s.version == version))


async def latest_version(session: AsyncSession) -> int:
    return int(await session.scalar(sa.select(sa.func.max(pipeline_snapshots.c.version))) or 0)


async def insert_snapshot(session: AsyncSession, **values: Any) -> None:
    await session.execute(sa.insert(pipeline_snapshots).values(**values))


async def note_confidential_release(session: AsyncSession, version: int, at: datetime) -> None:
    """A confidential release ran (whether or not a block moved): the cadence counts from here."""
    s = pipeline_snapshots.c
    await session.execute(
        sa.update(pipeline_snapshots).where(s.version == version).values(confidential_at=at)
    )
