"""The enterprises service's copy of public demand lines, kept from the demand service's events.

Readiness for a demand line reads its requirements here; a stale or repeated version of a
line (events may arrive twice or out of order) changes nothing.
"""

from __future__ import annotations

import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from services.enterprises import readiness
from services.enterprises.models import demand_lines
from shared.db import store_if_newer, utcnow
from shared.problems import Problem


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
) -> None:
    """Keep the requirements of a public demand line."""
    values = {
        "status": status[:20],
        "title": (title or "")[:500] or None,
        "requirements": requirements,
        "withdrawn": status in ("withdrawn", "draft"),
    }
    await _keep_if_newer(session, demand_id, version, values, {})


async def record_demand_withdrawn(
    session: AsyncSession, demand_id: uuid.UUID, *, version: int, status: str
) -> None:
    """Mark a demand line withdrawn: readiness for it is no longer offered."""
    values = {"status": status[:20], "withdrawn": True}
    await _keep_if_newer(session, demand_id, version, values, {"requirements": [], "title": None})


async def demand_requirements(session: AsyncSession, demand_id: uuid.UUID) -> list[readiness.Requirement]:
    """The requirements of a public demand line; 404 when it is unknown or withdrawn."""
    row = (
        await session.execute(sa.select(demand_lines).where(demand_lines.c.demand_id == demand_id))
    ).first()
    if row is None or row.withdrawn:
        raise Problem(
            404,
            "Demand line not found",
            f"No public demand line {demand_id} is known here (it may not be published yet).",
            type="not-found",
        )
    return [readiness.Requirement(r["code"], r.get("min_value_pence")) for r in row.requirements]
