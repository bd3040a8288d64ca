"""The enterprises service's copies of other services' data, kept from their events: public
demand lines with their awards, and completed mentoring sessions (for the impact report).

Readiness for a demand line reads its requirements here, bids check that their line is known,
and the award of a line (``demand.item.awarded``) is kept beside it under its own version. A
stale or repeated version of a line or of its award (events may arrive twice or out of order)
changes nothing.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from services.enterprises import readiness
from services.enterprises.models import demand_lines, mentoring_sessions
from shared.db import insert_of, store_if_newer, utcnow
from shared.problems import Problem

# A line first heard of through its award: any version of the line itself replaces these.
AWARD_FIRST_LINE = {"version": 0, "status": "awarded", "requirements": [], "withdrawn": False}


async def _keep_if_newer(
    session: AsyncSession, demand_id: uuid.UUID, version: int, values: dict[str, Any], new_row: dict[str, Any]
) -> None:
    """Write ``values`` for the line unless the stored version is the same or newer
    (``new_row``: the columns a line seen for the first time also needs)."""
    values = values | {"version": version, "updated_at": utcnow()}
    row = {"demand_id": demand_id, **new_row, **values}
    await store_if_newer(session, demand_lines, row, update=list(values))


async def record_demand_line(
    session: AsyncSession,
    demand_id: uuid.UUID,
    *,
    version: int,
    status: str,
    title: str | None,
    requirements: list[dict[str, Any]],
    anchor_id: uuid.UUID | None = None,
    estimated_value_pence: int | None = None,
    cpv_codes: list[str] | None = None,
    delivery_area: str | None = None,
    seen_at: datetime | None = None,
) -> None:
    """Keep a public demand line: its requirements and what the impact report reads.
    ``seen_at``: the event's time; the earliest seen is the line's ``first_published_at``."""
    values = {
        "status": status[:20],
        "title": (title or "")[:500] or None,
        "requirements": requirements,
        "withdrawn": status in ("withdrawn", "draft"),
        "anchor_id": anchor_id,
        "estimated_value_pence": estimated_value_pence,
        "cpv_codes": cpv_codes,
        "delivery_area": (delivery_area or "")[:200] or None,
    }
    await _keep_if_newer(session, demand_id, version, values, {})
    seen_at = seen_at or utcnow()
    first = demand_lines.c.first_published_at
    # The earliest event time wins, whatever order the events come in.
    await session.execute(
        sa.update(demand_lines)
        .where(demand_lines.c.demand_id == demand_id, sa.or_(first.is_(None), first > seen_at))
        .values(first_published_at=seen_at)
    )


async def record_demand_withdrawn(
    session: AsyncSession, demand_id: uuid.UUID, *, version: int, status: str
) -> None:
    """Mark a demand line withdrawn: readiness for it is no longer offered."""
    values = {"status": status[:20], "withdrawn": True}
    await _keep_if_newer(session, demand_id, version, values, {"requirements": [], "title": None})


@dataclass(frozen=True)
class AwardIn:
    """An award as the read model keeps it (the supplier already looked up here)."""

    version: int
    anchor_id: uuid.UUID | None
    enterprise_id: uuid.UUID | None
    registration_number: str | None
    supplier_name: str
    value_pence: int
    awarded_on: date


async def record_demand_award(session: AsyncSession, demand_id: uuid.UUID, award: AwardIn) -> bool:
    """Keep the award of a line unless the one stored has the same or a newer version (a line
    first seen through its award is stored too); True when written."""
    values = {
        "awarded_enterprise_id": award.enterprise_id,
        "awarded_registration_number": award.registration_number,
        "awarded_supplier_name": award.supplier_name[:200],
        "awarded_value_pence": award.value_pence,
        "awarded_on": award.awarded_on,
        "award_version": award.version,
    }
    row = {"demand_id": demand_id, "anchor_id": award.anchor_id, "updated_at": utcnow()}
    row |= AWARD_FIRST_LINE | values
    insert = insert_of(session, demand_lines).values(row)
    stored = demand_lines.c
    statement = insert.on_conflict_do_update(
        index_elements=[stored.demand_id],
        set_={name: insert.excluded[name] for name in values}
        | {"anchor_id": sa.func.coalesce(stored.anchor_id, insert.excluded.anchor_id)},
        where=sa.func.coalesce(stored.award_version, 0) < insert.excluded.award_version,
    )
    result = await session.execute(statement)
    return bool(result.rowcount)  # type: ignore[attr-defined]


def unknown_demand_line(demand_id: uuid.UUID) -> Problem:
    return Problem(
        404,
        "Demand line not found",
        f"No public demand line {demand_id} is known here (it may not be published yet).",
        type="not-found",
        errors=[{"field": "demand_id", "message": "no public demand line with this id is known here"}],
    )


async def demand_line(session: AsyncSession, demand_id: uuid.UUID, *, lock: bool = False) -> Any:
    """The stored line, or None; ``lock`` holds it against an award being recorded meanwhile."""
    query = sa.select(demand_lines).where(demand_lines.c.demand_id == demand_id)
    if lock:
        query = query.with_for_update()
    return (await session.execute(query)).first()


async def record_completed_session(session: AsyncSession, values: dict[str, Any]) -> None:
    """Keep a completed mentoring session for the impact report (a repeat or an older sequence
    changes nothing)."""
    await store_if_newer(session, mentoring_sessions, values, version="sequence")


async def demand_requirements(session: AsyncSession, demand_id: uuid.UUID) -> list[readiness.Requirement]:
    """The requirements of a public demand line; 404 when it is unknown or withdrawn."""
    row = await demand_line(session, demand_id)
    if row is None or row.withdrawn:
        raise unknown_demand_line(demand_id)
    return [readiness.Requirement(r["code"], r.get("min_value_pence")) for r in row.requirements]
