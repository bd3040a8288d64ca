"""Queries and writes of the pipeline tables, and the lock between their writers and a release."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from services.demand.disclosure import Atom
from services.demand.models import (
    pipeline_block_spans,
    pipeline_blocks,
    pipeline_cells,
    pipeline_rollup,
    pipeline_snapshots,
)
from services.demand.pipeline.cells import ATOM_DIMS, UNSCHEDULED, CellDeltas, ViewParams, atom_columns
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


@dataclass(frozen=True)
class PendingChanges:
    cells: int
    first_change: datetime | None
    last_change: datetime | None


async def pending_changes(session: AsyncSession) -> PendingChanges:
    c = pipeline_cells.c
    row = (
        await session.execute(
            sa.select(sa.func.count(), sa.func.min(c.changed_at), sa.func.max(c.changed_at)).where(
                c.dirty.is_(True)
            )
        )
    ).one()
    return PendingChanges(int(row[0] or 0), row[1], row[2])


async def pending_aggregate_only(session: AsyncSession) -> dict[str, tuple[int, int]]:
    """The live (lines, value) of every aggregate-only cell changed since the last release."""
    c = pipeline_cells.c
    rows = await session.execute(
        sa.select(c.cell_key, c.lines, c.value_pence).where(c.dirty.is_(True), c.aggregate_only.is_(True))
    )
    return {row.cell_key: (int(row.lines), int(row.value_pence)) for row in rows}


async def aggregate_only_figures(
    session: AsyncSession,
) -> tuple[dict[Atom, dict[str, int]], dict[str, tuple[int, int]]]:
    """The aggregate-only value per atom and anchor as a release now would publish it, and the
    pending aggregate-only cells it was read from (see :func:`pending_aggregate_only`)."""
    c = pipeline_cells.c
    contributions: dict[Atom, dict[str, int]] = {}
    pending: dict[str, tuple[int, int]] = {}
    result = await session.execute(
        sa.select(
            *(c[d] for d in ATOM_DIMS),
            c.cell_key,
            c.anchor_id,
            c.dirty,
            c.lines,
            c.value_pence,
            c.released_lines,
            c.released_value_pence,
        ).where(c.aggregate_only.is_(True))
    )
    width = len(ATOM_DIMS)
    for row in result:
        if row.dirty:
            pending[row.cell_key] = (int(row.lines), int(row.value_pence))
            lines, value = row.lines, row.value_pence
        else:
            lines, value = row.released_lines, row.released_value_pence
        if lines <= 0:
            continue
        atom: Atom = tuple(row[:width])
        per_anchor = contributions.setdefault(atom, {})
        per_anchor[row.anchor_id] = per_anchor.get(row.anchor_id, 0) + int(value)
    return contributions, pending


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


async def changed_cells(session: AsyncSession) -> int:
    """How many cells changed their figures since the last release."""
    c = pipeline_cells.c
    return int(
        await session.scalar(
            sa.select(sa.func.count())
            .select_from(pipeline_cells)
            .where(
                c.dirty.is_(True),
                sa.or_(
                    c.lines != c.released_lines,
                    c.value_pence != c.released_value_pence,
                    c.annualised_pence != c.released_annualised_pence,
                ),
            )
        )
        or 0
    )


async def roll_up_changes(session: AsyncSession) -> None:
    """Add what this release changes to the rollup (before the released figures move)."""
    c = pipeline_cells.c
    grouping = [c.anchor_id, c.aggregate_only, *(c[name] for name in ROLLUP_KEY)]
    changes = (
        sa.select(
            *grouping,
            sa.func.sum(c.lines - c.released_lines),
            sa.func.sum(c.value_pence - c.released_value_pence),
            sa.func.sum(c.annualised_pence - c.released_annualised_pence),
            sa.func.sum(sa.case((c.suitable_for_vcse.is_(True), c.lines - c.released_lines), else_=0)),
            sa.func.sum(sa.case((c.suitable_for_sme.is_(True), c.lines - c.released_lines), else_=0)),
        )
        .where(c.dirty.is_(True))
        .group_by(*grouping)
    )
    statement = insert_of(session, pipeline_rollup).from_select(
        ["anchor_id", "aggregate_only", *ROLLUP_KEY, *ROLLUP_MEASURES], changes
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


async def release_changed_cells(session: AsyncSession) -> None:
    """Copy the live figures of the changed cells to the released ones; emptied cells go."""
    c = pipeline_cells.c
    await session.execute(sa.delete(pipeline_cells).where(c.dirty.is_(True), c.lines == 0))
    await session.execute(
        sa.update(pipeline_cells)
        .where(c.dirty.is_(True))
        .values(
            released_lines=c.lines,
            released_value_pence=c.value_pence,
            released_annualised_pence=c.annualised_pence,
            dirty=False,
        )
    )


async def current_blocks(session: AsyncSession) -> dict[str, tuple[int, bool]]:
    """The block (id, publishable) of every atom, as the latest snapshot has them."""
    b = pipeline_blocks.c
    return {
        row.atom_key: (int(row.block_id), bool(row.publishable))
        for row in await session.execute(sa.select(b.atom_key, b.block_id, b.publishable))
    }


async def write_blocks(
    session: AsyncSession,
    removed: Sequence[str],
    changed: dict[str, tuple[int, bool, Atom]],
    affected_blocks: set[int],
) -> None:
    """Apply a release's changes to the block table and the spans of the blocks they touch."""
    b = pipeline_blocks.c
    for start in range(0, len(removed), 500):
        await session.execute(sa.delete(pipeline_blocks).where(b.atom_key.in_(removed[start : start + 500])))
    rows = [
        {"atom_key": key, "block_id": ident, "publishable": publishable, **atom_columns(atom)}
        for key, (ident, publishable, atom) in changed.items()
    ]
    if rows:
        statement = insert_of(session, pipeline_blocks)
        statement = statement.on_conflict_do_update(
            index_elements=[b.atom_key],
            set_={"block_id": statement.excluded.block_id, "publishable": statement.excluded.publishable},
        )
        for start in range(0, len(rows), 2000):
            await session.execute(statement, rows[start : start + 2000])
    spans = pipeline_block_spans.c
    source = sa.select(b.block_id, b.publishable, *(b[name] for name in ROLLUP_KEY)).distinct()
    affected = sorted(affected_blocks)
    if len(affected) > 2000:
        await session.execute(sa.delete(pipeline_block_spans))
        await session.execute(
            sa.insert(pipeline_block_spans).from_select(["block_id", "publishable", *ROLLUP_KEY], source)
        )
        return
    for start in range(0, len(affected), 500):
        chunk = affected[start : start + 500]
        await session.execute(sa.delete(pipeline_block_spans).where(spans.block_id.in_(chunk)))
        await session.execute(
            sa.insert(pipeline_block_spans).from_select(
                ["block_id", "publishable", *ROLLUP_KEY], source.where(b.block_id.in_(chunk))
            )
        )


async def refresh_statistics(session: AsyncSession) -> None:
    """Fresh planner statistics after a large release, before autovacuum gets there (PostgreSQL)."""
    if is_postgres(session):
        await session.execute(
            sa.text("ANALYZE pipeline_blocks, pipeline_block_spans, pipeline_rollup, pipeline_cells")
        )


async def latest_snapshot(session: AsyncSession) -> sa.Row[Any] | None:
    return (
        await session.execute(
            sa.select(pipeline_snapshots).order_by(pipeline_snapshots.c.version.desc()).limit(1)
        )
    ).first()


async def latest_version(session: AsyncSession) -> int:
    return int(await session.scalar(sa.select(sa.func.max(pipeline_snapshots.c.version))) or 0)


async def insert_snapshot(session: AsyncSession, **values: Any) -> None:
    await session.execute(sa.insert(pipeline_snapshots).values(**values))


# --- views ---------------------------------------------------------------------------------------


def view_column(params: ViewParams, table: sa.Table, dim: str) -> sa.ColumnElement[Any]:
    if dim == "quarter":
        return table.c.tender_quarter if params.quarter_of == "tender" else table.c.start_quarter
    return table.c[dim]


def view_condition(params: ViewParams, table: sa.Table) -> sa.ColumnElement[bool] | None:
    """The view's filter as a condition on a table with the atom columns; None when unfiltered."""
    t = table.c
    conditions: list[sa.ColumnElement[bool]] = []
    quarter = view_column(params, table, "quarter")
    if params.from_quarter or params.to_quarter:
        conditions.append(quarter != UNSCHEDULED)
    if params.from_quarter:
        conditions.append(quarter >= params.from_quarter)
    if params.to_quarter:
        conditions.append(quarter <= params.to_quarter)
    if params.cpv:
        conditions.append(
            sa.or_(*((t.cpv_division if len(p) == 2 else t.cpv_group) == p for p in params.cpv))
        )
    for name in ("anchor_type", "value_band", "delivery_area"):
        if getattr(params, name):
            conditions.append(t[name].in_(getattr(params, name)))
    for name in ("suitable_for_vcse", "suitable_for_sme"):
        if getattr(params, name) is not None:
            conditions.append(t[name].is_(getattr(params, name)))
    return sa.and_(*conditions) if conditions else None


async def figure_rows(
    session: AsyncSession, params: ViewParams, *, rollup: bool
) -> tuple[list[sa.Row[Any]], sa.Row[Any]]:
    """The released figures of a view per cell (group keys first) and in total: lines, value,
    annualised value, distinct anchors, VCSE-suitable and SME-suitable lines."""
    if rollup:
        table = pipeline_rollup
        r = table.c
        lines, value, per_year, vcse, sme = (
            r.lines,
            r.value_pence,
            r.annualised_pence,
            r.vcse_lines,
            r.sme_lines,
        )
    else:
        table = pipeline_cells
        c = table.c
        lines, value, per_year = c.released_lines, c.released_value_pence, c.released_annualised_pence
        vcse = sa.case((c.suitable_for_vcse.is_(True), c.released_lines), else_=0)
        sme = sa.case((c.suitable_for_sme.is_(True), c.released_lines), else_=0)
    group = [view_column(params, table, d).label(d) for d in params.group_by]
    condition = view_condition(params, table)
    measures = [
        sa.func.sum(lines),
        sa.func.sum(value),
        sa.func.sum(per_year),
        sa.func.count(sa.distinct(table.c.anchor_id)),
        sa.func.sum(vcse),
        sa.func.sum(sme),
    ]
    where = [lines > 0] + ([condition] if condition is not None else [])
    cell_rows = (await session.execute(sa.select(*group, *measures).where(*where).group_by(*group))).all()
    total_row = (await session.execute(sa.select(*measures).where(*where))).one()
    return list(cell_rows), total_row


async def block_rows(session: AsyncSession, params: ViewParams, *, rollup: bool) -> list[sa.Row[Any]]:
    """Where the protection blocks lie in the view: (block_id, publishable, inside the filter,
    group keys...) once per cell of the view each block touches."""
    spans = pipeline_block_spans if rollup else pipeline_blocks
    b = spans.c
    block_group = [view_column(params, spans, d).label(d) for d in params.group_by]
    block_condition = view_condition(params, spans)
    inside = (
        sa.case((block_condition, sa.literal(1)), else_=sa.literal(0))
        if block_condition is not None
        else sa.literal(1)
    ).label("inside")
    result = await session.execute(
        sa.select(b.block_id, b.publishable, inside, *block_group).group_by(
            b.block_id, b.publishable, inside, *block_group
        )
    )
    return list(result)
