"""Cohorts: the intakes of the incubation programme that enterprises belong to."""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from services.enterprises import repository
from services.enterprises.schemas import Cohort, CohortCreate
from shared.db import utcnow
from shared.problems import conflict, not_found


async def create_cohort(session: AsyncSession, data: CohortCreate) -> Cohort:
    taken = conflict(
        f"A cohort named {data.name!r} exists already.",
        errors=[{"field": "name", "message": "already used by another cohort"}],
    )
    if await repository.cohort_named(session, data.name) is not None:
        raise taken
    cohort_id = uuid.uuid4()
    values = data.model_dump() | {"id": cohort_id, "version": 1, "created_at": utcnow()}
    await repository.insert_cohort(session, values, taken)
    return await get_cohort(session, cohort_id)


async def get_cohort(session: AsyncSession, cohort_id: uuid.UUID) -> Cohort:
    row = await repository.cohort(session, cohort_id)
    if row is None:
        raise not_found("Cohort", cohort_id)
    return Cohort.model_validate(row)


async def list_cohorts(
    session: AsyncSession, limit: int, cursor: str | None
) -> tuple[list[Cohort], str | None]:
    rows, next_cursor = await repository.cohort_page(session, limit, cursor)
    return [Cohort.model_validate(r) for r in rows], next_cursor
