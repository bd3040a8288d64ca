"""Queries and writes of anchors and demand lines (the pipeline's are in ``pipeline/storage.py``,
the read models' in ``read_models.py``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from services.demand import cpv
from services.demand.models import anchors, awards, demand_line_cpvs, demand_line_versions, demand_lines
from services.demand.vocabulary import NOT_YET_TENDERING, OPEN_STATUSES
from shared.db import is_postgres
from shared.pagination import Key, Keyset

LINE_COLUMNS = [c for c in demand_lines.c if c.name != "main_cpv"]


# --- anchors -------------------------------------------------------------------------------------


async def get_anchor(session: AsyncSession, anchor_id: str) -> sa.Row[Any] | None:
    return (await session.execute(sa.select(anchors).where(anchors.c.id == anchor_id))).first()


async def insert_anchor(session: AsyncSession, values: dict[str, Any]) -> sa.Row[Any]:
    return (await session.execute(sa.insert(anchors).values(**values).returning(anchors))).one()


async def update_anchor(
    session: AsyncSession, anchor_id: str, version: int, values: dict[str, Any]
) -> sa.Row[Any] | None:
    """Change an anchor still at ``version``; None when it is not (another write came first)."""
    statement = (
        sa.update(anchors)
        .where(anchors.c.id == anchor_id, anchors.c.version == version)
        .values(**values)
        .returning(anchors)
    )
    return (await session.execute(statement)).first()


ANCHOR_ORDER = Keyset(anchors.c.name, anchors.c.id)


async def anchor_page(
    session: AsyncSession, *, cursor: str | None, limit: int, anchor_type: str | None, q: str | None
) -> tuple[list[sa.Row[Any]], str | None]:
    """One page of anchors by name, and the next cursor."""
    query = sa.select(anchors)
    if anchor_type:
        query = query.where(anchors.c.type == anchor_type)
    if q:
        query = query.where(sa.func.lower(anchors.c.name).contains(q.lower(), autoescape=True))
    return await ANCHOR_ORDER.page(session, query, cursor, limit)


async def anchors_by_id(session: AsyncSession, anchor_ids: set[str]) -> dict[str, sa.Row[Any]]:
    rows = await session.execute(sa.select(anchors).where(anchors.c.id.in_(anchor_ids)))
    return {row.id: row for row in rows}


# --- lines ---------------------------------------------------------------------------------------


def line_query() -> sa.Select[Any]:
    """Every column of a line with its anchor's type."""
    return sa.select(*LINE_COLUMNS, anchors.c.type.label("anchor_type")).join(
        anchors, anchors.c.id == demand_lines.c.anchor_id
    )


async def get_line(session: AsyncSession, line_id: str, *, for_update: bool = False) -> dict[str, Any] | None:
    query = line_query().where(demand_lines.c.id == line_id)
    if for_update and is_postgres(session):
        query = query.with_for_update(of=demand_lines)
    row = (await session.execute(query)).first()
    return dict(row._mapping) if row is not None else None


async def open_lines_of_anchor(session: AsyncSession, anchor_id: str) -> list[dict[str, Any]]:
    result = await session.execute(
        sa.select(*LINE_COLUMNS).where(
            demand_lines.c.anchor_id == anchor_id, demand_lines.c.status.in_(OPEN_STATUSES)
        )
    )
    return [dict(row._mapping) for row in result]


async def external_ref_owner(
    session: AsyncSession, anchor_id: str, external_ref: str | None, except_id: str | None = None
) -> str | None:
    """The id of the anchor's line with this ``external_ref`` (other than ``except_id``)."""
    if external_ref is None:
        return None
    query = sa.select(demand_lines.c.id).where(
        demand_lines.c.anchor_id == anchor_id, demand_lines.c.external_ref == external_ref
    )
    if except_id is not None:
        query = query.where(demand_lines.c.id != except_id)
    return await session.scalar(query)


def _stored(line: dict[str, Any]) -> dict[str, Any]:
    return {**line, "main_cpv": cpv.base(line["cpv_codes"][0])}


async def insert_lines(session: AsyncSession, lines: list[dict[str, Any]]) -> None:
    """Insert new lines (one statement, executemany for several)."""
    if len(lines) == 1:
        await session.execute(sa.insert(demand_lines).values(**_stored(lines[0])))
    elif lines:
        await session.execute(sa.insert(demand_lines), [_stored(line) for line in lines])


async def update_line(session: AsyncSession, line_id: str, version: int, values: dict[str, Any]) -> bool:
    """Change a line still at ``version``; False when it is not."""
    result = await session.execute(
        sa.update(demand_lines)
        .where(demand_lines.c.id == line_id, demand_lines.c.version == version)
        .values(**_stored(values))
    )
    return result.rowcount == 1  # type: ignore[attr-defined]


async def update_lines(session: AsyncSession, changes: list[tuple[str, int, dict[str, Any]]]) -> None:
    """Change many lines at once, each (id, version it had, new values with the same keys)."""
    if not changes:
        return
    t = demand_lines.c
    rows = [
        {"b_id": line_id, "b_version": version, **_stored(values)} for line_id, version, values in changes
    ]
    columns = [name for name in rows[0] if not name.startswith("b_")]
    statement = (
        sa.update(demand_lines)
        .where(t.id == sa.bindparam("b_id"), t.version == sa.bindparam("b_version"))
        .values({name: sa.bindparam(name) for name in columns})
    )
    await session.connection()  # executemany through Core, not the ORM
    await session.execute(statement.execution_options(synchronize_session=False), rows)


async def replace_line_cpvs(session: AsyncSession, cleared: list[str], rows: list[dict[str, Any]]) -> None:
    """Drop the CPV rows of the ``cleared`` lines, then add ``rows``."""
    for start in range(0, len(cleared), 500):
        await session.execute(
            sa.delete(demand_line_cpvs).where(demand_line_cpvs.c.line_id.in_(cleared[start : start + 500]))
        )
    if rows:
        await session.execute(sa.insert(demand_line_cpvs), rows)


async def insert_versions(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    if rows:
        await session.execute(sa.insert(demand_line_versions), rows)


def cpv_prefix_condition(prefixes: Sequence[str]) -> sa.ColumnElement[bool]:
    """Lines with a code (of the line or a lot) under any of the prefixes."""
    c = demand_line_cpvs.c
    return demand_lines.c.id.in_(
        sa.select(c.line_id).where(
            sa.or_(*(sa.and_(c.cpv_code >= p, c.cpv_code < cpv.prefix_upper_bound(p)) for p in prefixes))
        )
    )


@dataclass(frozen=True)
class LineFilters:
    anchor_id: str | None = None
    statuses: tuple[str, ...] = ()
    visibility: str | None = None
    category: str | None = None
    cpv_prefixes: tuple[str, ...] = ()
    tender_from: date | None = None
    tender_to: date | None = None
    suitable_for_sme: bool | None = None
    suitable_for_vcse: bool | None = None

    def conditions(self) -> list[sa.ColumnElement[bool]]:
        t = demand_lines.c
        out: list[sa.ColumnElement[bool]] = []
        if self.anchor_id:
            out.append(t.anchor_id == self.anchor_id)
        if self.statuses:
            out.append(t.status.in_(self.statuses))
        if self.visibility:
            out.append(t.visibility == self.visibility)
        if self.category:
            out.append(t.category == self.category)
        if self.cpv_prefixes:
            out.append(cpv_prefix_condition(self.cpv_prefixes))
        if self.tender_from:
            out.append(t.expected_tender_date >= self.tender_from)
        if self.tender_to:
            out.append(t.expected_tender_date <= self.tender_to)
        if self.suitable_for_sme is not None:
            out.append(t.suitable_for_sme.is_(self.suitable_for_sme))
        if self.suitable_for_vcse is not None:
            out.append(t.suitable_for_vcse.is_(self.suitable_for_vcse))
        return out


LINE_ORDER = Keyset(demand_lines.c.created_at, demand_lines.c.id)


async def line_page(
    session: AsyncSession, conditions: Sequence[sa.ColumnElement[bool]], *, after: Key | None, limit: int
) -> list[dict[str, Any]]:
    """Up to ``limit`` lines meeting the conditions, oldest first, after a (created_at, id) key."""
    query = line_query()
    for condition in conditions:
        query = query.where(condition)
    rows = await session.execute(LINE_ORDER.select(query, after, limit))
    return [dict(r._mapping) for r in rows]


def exported_lines() -> list[sa.ColumnElement[bool]]:
    """Public lines in the OCDS export: those of :func:`public_open_lines`, and awarded ones with
    their award recorded."""
    t = demand_lines.c
    awarded = sa.and_(t.status == "awarded", t.id.in_(sa.select(awards.c.demand_id)))
    return [
        t.visibility == "public",
        sa.or_(t.status.in_(OPEN_STATUSES), awarded),
        t.stale_left_pipeline.is_(False),
    ]


def public_open_lines() -> list[sa.ColumnElement[bool]]:
    """Public lines in the forward pipeline (matched, exported): open, and not a stale line that left."""
    t = demand_lines.c
    return [t.visibility == "public", t.status.in_(OPEN_STATUSES), t.stale_left_pipeline.is_(False)]


async def overdue_lines(session: AsyncSession, today: date, limit: int) -> list[dict[str, Any]]:
    """Up to ``limit`` draft or planned lines whose expected tender date is before ``today`` and that
    are not marked stale yet, each with its anchor's type; on PostgreSQL rows another replica
    holds are skipped."""
    t = demand_lines.c
    query = (
        line_query()
        .where(
            t.status.in_(NOT_YET_TENDERING),
            t.expected_tender_date < today,
            t.stale_since.is_(None),
        )
        .order_by(t.expected_tender_date, t.id)
        .limit(limit)
    )
    if is_postgres(session):
        query = query.with_for_update(of=demand_lines, skip_locked=True)
    return [dict(row._mapping) for row in await session.execute(query)]


async def mark_stale(
    session: AsyncSession, line_id: str, version: int, at: datetime, *, left_pipeline: bool
) -> bool:
    """Mark a line stale if it is still at ``version`` and not marked; True when this call did."""
    t = demand_lines.c
    result = await session.execute(
        sa.update(demand_lines)
        .where(t.id == line_id, t.version == version, t.stale_since.is_(None))
        .values(stale_since=at, stale_left_pipeline=left_pipeline)
    )
    return result.rowcount == 1  # type: ignore[attr-defined]


VERSION_ORDER = Keyset(demand_line_versions.c.version, descending=True)


async def version_page(session: AsyncSession, line_id: str, *, below: int, limit: int) -> list[sa.Row[Any]]:
    """Up to ``limit`` kept versions of a line below ``below``, newest first."""
    query = sa.select(demand_line_versions).where(demand_line_versions.c.line_id == line_id)
    return list((await session.execute(VERSION_ORDER.select(query, (below,), limit))).all())


async def newest_line_created_at(session: AsyncSession, anchor_id: str) -> datetime | None:
    t = demand_lines.c
    return await session.scalar(sa.select(sa.func.max(t.created_at)).where(t.anchor_id == anchor_id))


async def lines_by_ref(
    session: AsyncSession, anchor_id: str, refs: Sequence[str | None], *, created_by: datetime
) -> dict[str, dict[str, Any]]:
    """The anchor's lines with these ``external_ref`` values created by ``created_by`` (locked on
    PostgreSQL).

    On PostgreSQL the bound on ``created_at`` keeps the planner, whose statistics cannot see
    the lines this transaction has inserted, from reading every line of the anchor to find a
    few hundred refs; SQLite takes the unique index for the refs (the bound would turn it to
    the range on ``created_at``).
    """
    t = demand_lines.c
    existing: dict[str, dict[str, Any]] = {}
    postgres = is_postgres(session)
    for start in range(0, len(refs), 500):
        query = sa.select(*LINE_COLUMNS).where(
            t.anchor_id == anchor_id, t.external_ref.in_(refs[start : start + 500])
        )
        if postgres:
            query = query.where(t.created_at <= created_by).with_for_update()
        for row in await session.execute(query):
            existing[row.external_ref] = dict(row._mapping)
    return existing


async def candidate_lines(session: AsyncSession, prefixes: Sequence[str]) -> list[dict[str, Any]]:
    """Public open lines with a code under any of the prefixes."""
    query = line_query().where(*public_open_lines(), cpv_prefix_condition(prefixes))
    return [dict(row._mapping) for row in await session.execute(query)]


# --- awards --------------------------------------------------------------------------------------


async def get_award(session: AsyncSession, demand_id: str) -> dict[str, Any] | None:
    row = (await session.execute(sa.select(awards).where(awards.c.demand_id == demand_id))).first()
    return dict(row._mapping) if row is not None else None


async def awards_of(session: AsyncSession, demand_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """The awards of these lines, by line id (lines without one are left out)."""
    if not demand_ids:
        return {}
    rows = await session.execute(sa.select(awards).where(awards.c.demand_id.in_(demand_ids)))
    return {row.demand_id: dict(row._mapping) for row in rows}


async def insert_award(session: AsyncSession, values: dict[str, Any]) -> None:
    await session.execute(sa.insert(awards).values(**values))


async def update_award(session: AsyncSession, demand_id: str, version: int, values: dict[str, Any]) -> bool:
    """Change an award still at ``version``; False when it is not."""
    result = await session.execute(
        sa.update(awards).where(awards.c.demand_id == demand_id, awards.c.version == version).values(**values)
    )
    return result.rowcount == 1  # type: ignore[attr-defined]
