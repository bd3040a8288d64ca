"""Mentors recommended for an enterprise's open milestones."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncSession

from services.mentoring import recommendations as ranking
from services.mentoring import slots
from services.mentoring.models import enterprises, mentors
from services.mentoring.repository import (
    active_mentees,
    taken_by_mentor,
)
from services.mentoring.settings import MentoringSettings


@dataclass(frozen=True)
class RecommendationResult:
    enterprise_known: bool
    open_milestones: list[str]
    ranked: list[ranking.Ranked]
    mentors: dict[uuid.UUID, Row[Any]]


async def recommend_mentors(
    session: AsyncSession,
    enterprise_id: uuid.UUID,
    *,
    now: datetime,
    settings: MentoringSettings,
    limit: int,
) -> RecommendationResult:
    enterprise = (
        await session.execute(sa.select(enterprises).where(enterprises.c.id == enterprise_id))
    ).first()
    open_milestones = list(enterprise.open_milestones) if enterprise is not None else []
    rows = (await session.execute(sa.select(mentors).where(mentors.c.active.is_(True)))).all()
    mentees = await active_mentees(session, None, now, settings)
    taken = await taken_by_mentor(
        session, sa.select(mentors.c.id).where(mentors.c.active.is_(True)), now, now
    )
    candidates = []
    for row in rows:
        week_start, week_end = slots.local_week_bounds(now, ZoneInfo(row.timezone))
        this_week = sum(1 for t in taken.get(row.id, ()) if week_start <= t.start < week_end)
        candidates.append(
            ranking.Candidate(
                mentor_id=row.id,
                name=row.name,
                expertise=frozenset(row.expertise),
                active_mentees=len(mentees[row.id]),
                max_active_mentees=row.max_active_mentees,
                sessions_this_week=this_week,
                max_sessions_per_week=row.max_sessions_per_week,
                already_mentoring=enterprise_id in mentees[row.id],
            )
        )
    return RecommendationResult(
        enterprise_known=enterprise is not None,
        open_milestones=open_milestones,
        ranked=ranking.rank(open_milestones, candidates, limit),
        mentors={row.id: row for row in rows},
    )
