"""Free slots: one mentor's, and a search over many mentors."""

from __future__ import annotations

import heapq
import itertools
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncSession

from services.mentoring import slots
from services.mentoring.models import mentor_expertise, mentors
from services.mentoring.repository import (
    SLOT_CURSOR,
    taken_by_mentor,
)
from services.mentoring.service.mentors import rules_of
from shared.problems import field_errors

Bound = datetime | date  # a date means local midnight in the mentor's zone


def resolve_bound(bound: Bound, zone: ZoneInfo) -> datetime:
    if isinstance(bound, datetime):
        return bound.astimezone(UTC)
    return slots.wall_clock_instant(bound, 0, zone)


def check_duration(mentor: Row[Any], minutes: int, field: str) -> None:
    if minutes not in mentor.session_lengths:
        lengths = ", ".join(str(n) for n in mentor.session_lengths)
        raise field_errors([{"field": field, "message": f"this mentor offers sessions of {lengths} minutes"}])


def check_range(start: datetime, end: datetime, max_days: int) -> None:
    if end <= start:
        raise field_errors([{"field": "end", "message": "must be after start"}])
    if end - start > timedelta(days=max_days):
        raise field_errors([{"field": "end", "message": f"the range is at most {max_days} days"}])


async def mentor_slots(
    session: AsyncSession,
    mentor: Row[Any],
    *,
    start: Bound,
    end: Bound,
    duration_minutes: int,
    now: datetime,
    max_days: int,
) -> list[datetime]:
    """The mentor's free start times in the range, as instants in the mentor's zone."""
    check_duration(mentor, duration_minutes, "duration_minutes")
    zone = ZoneInfo(mentor.timezone)
    range_start, range_end = resolve_bound(start, zone), resolve_bound(end, zone)
    check_range(range_start, range_end, max_days)
    if not mentor.active:
        return []
    taken = await taken_by_mentor(session, [mentor.id], range_start, range_end)
    found = slots.free_slots(
        rules_of(mentor), timedelta(minutes=duration_minutes), range_start, range_end, now, taken[mentor.id]
    )
    return [instant.astimezone(zone) for instant in found]


# What slot computation reads of a mentor (a search over hundreds of mentors reads nothing else).
_RULE_COLUMNS = [
    mentors.c.id,
    mentors.c.version,
    mentors.c.timezone,
    mentors.c.session_lengths,
    mentors.c.weekly_windows,
    mentors.c.date_overrides,
    mentors.c.buffer_before_minutes,
    mentors.c.buffer_after_minutes,
    mentors.c.minimum_notice_minutes,
    mentors.c.slot_interval_minutes,
    mentors.c.booking_horizon_days,
    mentors.c.max_sessions_per_day,
    mentors.c.max_sessions_per_week,
]


@dataclass(frozen=True)
class MentorSlot:
    mentor_id: uuid.UUID
    timezone: str
    start: datetime


async def slots_of_mentors(
    session: AsyncSession,
    *,
    expertise: Sequence[str],
    mentor_ids: Sequence[uuid.UUID],
    start: Bound,
    end: Bound,
    duration_minutes: int,
    now: datetime,
    max_days: int,
    limit: int,
    cursor: str | None,
) -> tuple[list[MentorSlot], str | None]:
    """Free slots of every active mentor with the expertise (or in the list) offering that length,
    soonest first; a date bound is midnight in each mentor's own zone."""
    chosen = sa.select(mentors.c.id).where(mentors.c.active.is_(True))
    if expertise:
        chosen = chosen.where(
            mentors.c.id.in_(
                sa.select(mentor_expertise.c.mentor_id).where(mentor_expertise.c.tag.in_(expertise))
            )
        )
    if mentor_ids:
        chosen = chosen.where(mentors.c.id.in_(mentor_ids))
    rows = (await session.execute(sa.select(*_RULE_COLUMNS).where(mentors.c.id.in_(chosen)))).all()
    offering = [row for row in rows if duration_minutes in row.session_lengths]
    after = SLOT_CURSOR.decode(cursor)
    after_instant, after_mentor = (None, "") if after is None else (after[0], str(after[1]))
    bounds = {}
    for row in offering:
        zone = ZoneInfo(row.timezone)
        bounds[row.id] = (resolve_bound(start, zone), resolve_bound(end, zone))
        check_range(*bounds[row.id], max_days)
    if not offering:
        return [], None
    overall_start = min(b[0] for b in bounds.values())
    overall_end = max(b[1] for b in bounds.values())
    taken = await taken_by_mentor(session, [row.id for row in offering], overall_start, overall_end)
    duration = timedelta(minutes=duration_minutes)

    def stream(row: Row[Any]) -> Iterator[tuple[datetime, str, Row[Any]]]:
        key = str(row.id)
        range_start, range_end = bounds[row.id]
        if after_instant is not None:
            range_start = max(range_start, after_instant)
        for instant in slots.iter_free_slots(
            rules_of(row), duration, range_start, range_end, now, taken[row.id]
        ):
            if instant != after_instant or key > after_mentor:
                yield instant, key, row

    # Each mentor's slots come soonest first: merging them lazily computes only what the page shows.
    merged = heapq.merge(*(stream(row) for row in offering), key=lambda item: (item[0], item[1]))
    page = list(itertools.islice(merged, limit + 1))
    items = [
        MentorSlot(mentor_id=row.id, timezone=row.timezone, start=instant.astimezone(ZoneInfo(row.timezone)))
        for instant, _, row in page[:limit]
    ]
    next_cursor = SLOT_CURSOR.encode([page[limit - 1][0], page[limit - 1][1]]) if len(page) > limit else None
    return items, next_cursor
