"""Reading views of the released pipeline: one GROUP BY per view over the released figures,
and what the releases since a snapshot changed in a view, to move the last answer for it."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from services.demand.models import (
    pipeline_cells,
    pipeline_changes,
    pipeline_confidential,
    pipeline_rollup,
    pipeline_snapshots,
)
from services.demand.pipeline.cells import UNSCHEDULED, ViewParams
from services.demand.pipeline.storage import ROLLUP_KEY, ROLLUP_MEASURES


def view_column(params: ViewParams, table: Any, dim: str) -> sa.ColumnElement[Any]:
    if dim == "quarter":
        return table.c.tender_quarter if params.quarter_of == "tender" else table.c.start_quarter
    return table.c[dim]


def view_condition(params: ViewParams, table: Any) -> sa.ColumnElement[bool] | None:
    """The view's filter as a condition on a table with the atom columns; None when unfiltered."""
    t = table.c
    conditions: list[sa.ColumnElement[bool]] = []
    if params.from_quarter or params.to_quarter:
        quarter = view_column(params, table, "quarter")
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


def _where(params: ViewParams, table: Any) -> list[sa.ColumnElement[bool]]:
    condition = view_condition(params, table)
    return [condition] if condition is not None else []


def _measures(source: Any) -> list[sa.ColumnElement[Any]]:
    t = source.c
    return [
        sa.func.sum(t.lines),
        sa.func.sum(t.value_pence),
        sa.func.sum(t.annualised_pence),
        sa.func.count(sa.distinct(t.anchor_id)),
        sa.func.sum(t.vcse_lines),
        sa.func.sum(t.sme_lines),
    ]


def _public_source(*, rollup: bool) -> Any:
    """The released public figures, one row per fine cell (or rollup row)."""
    if rollup:
        r = pipeline_rollup.c
        return sa.select(pipeline_rollup).where(r.aggregate_only.is_(False), r.lines > 0).subquery("public")
    c = pipeline_cells.c
    return (
        sa.select(
            *(c[name] for name in (*ROLLUP_KEY, "value_band", "suitable_for_vcse", "suitable_for_sme")),
            c.delivery_area,
            c.anchor_id,
            c.released_lines.label("lines"),
            c.released_value_pence.label("value_pence"),
            c.released_annualised_pence.label("annualised_pence"),
            sa.case((c.suitable_for_vcse.is_(True), c.released_lines), else_=0).label("vcse_lines"),
            sa.case((c.suitable_for_sme.is_(True), c.released_lines), else_=0).label("sme_lines"),
        )
        .where(c.aggregate_only.is_(False), c.released_lines > 0)
        .subquery("public")
    )


def _with_confidential() -> Any:
    """The released public figures and the released confidential blocks, on the blocks' dimensions."""
    r = pipeline_rollup.c
    k = pipeline_confidential.c
    columns = ("cpv_division", "tender_quarter", "anchor_id", *ROLLUP_MEASURES)
    public = sa.select(*(r[name] for name in columns)).where(r.aggregate_only.is_(False), r.lines > 0)
    confidential = sa.select(*(k[name] for name in columns)).where(k.lines > 0)
    return sa.union_all(public, confidential).subquery("figures")


async def figure_rows(
    session: AsyncSession, params: ViewParams, *, rollup: bool, confidential: bool
) -> tuple[list[sa.Row[Any]], sa.Row[Any]]:
    """The released figures of a view per cell (group keys first) and in total: lines, value,
    annualised value, distinct anchors, VCSE-suitable and SME-suitable lines. With
    ``confidential`` (a view holding whole blocks) the released confidential blocks are added."""
    source = _with_confidential() if confidential else _public_source(rollup=rollup)
    group = [view_column(params, source, d).label(d) for d in params.group_by]
    where = _where(params, source)
    measures = _measures(source)
    total_row = (await session.execute(sa.select(*measures).where(*where))).one()
    if not group:
        return [total_row], total_row  # one cell, the total: no second pass over the figures
    cell_rows = (await session.execute(sa.select(*group, *measures).where(*where).group_by(*group))).all()
    return list(cell_rows), total_row


async def changes_between(
    session: AsyncSession, params: ViewParams, after: int, upto: int, *, limit: int
) -> list[sa.Row[Any]] | None:
    """What the releases after ``after`` up to ``upto`` moved in a view: per view cell (group
    keys first) and anchor, lines, value, annualised value, VCSE and SME lines; None when there
    are more than ``limit`` such rows (computing the view again is cheaper then)."""
    ch = pipeline_changes
    group = [view_column(params, ch, d).label(d) for d in params.group_by]
    rows = (
        await session.execute(
            sa.select(
                *group,
                ch.c.anchor_id,
                *(sa.func.sum(ch.c[name]) for name in ROLLUP_MEASURES),
            )
            .where(ch.c.version > after, ch.c.version <= upto, *_where(params, ch))
            .group_by(*group, ch.c.anchor_id)
            .limit(limit + 1)
        )
    ).all()
    return None if len(rows) > limit else list(rows)


async def changes_recorded(session: AsyncSession, after: int, upto: int, *, confidential: bool) -> bool:
    """Whether every release after ``after`` up to ``upto`` recorded its changes (a release by
    an older version of the service did not) and, for a view holding ``confidential`` figures,
    none moved the confidential part."""
    s = pipeline_snapshots.c
    unmovable = s.raw_totals.is_(None)
    if confidential:
        unmovable = sa.or_(unmovable, s.confidential_moved.is_(True))
    return not await session.scalar(
        sa.select(sa.func.count())
        .select_from(pipeline_snapshots)
        .where(s.version > after, s.version <= upto, unmovable)
    )


async def anchor_lines(
    session: AsyncSession, params: ViewParams, anchors: set[str], *, confidential: bool
) -> list[sa.Row[Any]]:
    """The released lines of these anchors in a view, per view cell (group keys first) and anchor."""
    source = _with_confidential() if confidential else _public_source(rollup=True)
    group = [view_column(params, source, d).label(d) for d in params.group_by]
    return list(
        (
            await session.execute(
                sa.select(*group, source.c.anchor_id, sa.func.sum(source.c.lines))
                .where(source.c.anchor_id.in_(sorted(anchors)), *_where(params, source))
                .group_by(*group, source.c.anchor_id)
            )
        ).all()
    )
