"""Mentors: registration, profile changes, availability rules, the list."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncSession

from services.mentoring import events, slots
from services.mentoring.models import mentor_expertise, mentors
from services.mentoring.repository import (
    MENTOR_ORDER,
    load_mentor,
)
from services.mentoring.schemas import (
    AvailabilityIn,
    MentorIn,
    MentorPatch,
    clock_minutes,
)
from shared import outbox
from shared.events import CloudEvent, new_event

# Rules parsed from a mentor's row, by (mentor, version): every change of the rules (or of the
# weekly limit) bumps the version, so an entry never goes stale; the oldest go first.
_RULES_CACHE: dict[tuple[uuid.UUID, int], slots.Rules] = {}


def _availability_values(availability: AvailabilityIn) -> dict[str, Any]:
    weekly = sorted(availability.weekly, key=lambda w: (w.weekday, clock_minutes(w.start)))
    overrides = sorted(availability.overrides, key=lambda o: o.date)
    return {
        "weekly_windows": [{"weekday": w.weekday, "start": w.start, "end": w.end} for w in weekly],
        "date_overrides": [
            {
                "date": o.date.isoformat(),
                "windows": [
                    {"start": w.start, "end": w.end}
                    for w in sorted(o.windows, key=lambda w: clock_minutes(w.start))
                ],
            }
            for o in overrides
        ],
        "buffer_before_minutes": availability.buffer_before_minutes,
        "buffer_after_minutes": availability.buffer_after_minutes,
        "minimum_notice_minutes": availability.minimum_notice_minutes,
        "cancellation_notice_minutes": availability.cancellation_notice_minutes,
        "slot_interval_minutes": availability.slot_interval_minutes,
        "booking_horizon_days": availability.booking_horizon_days,
        "max_sessions_per_day": availability.max_sessions_per_day,
    }


def rules_of(mentor: Row[Any]) -> slots.Rules:
    """A mentor row's availability rules, ready for slot computation (parsed once per version)."""
    key = (mentor.id, mentor.version)
    found = _RULES_CACHE.get(key)
    if found is None:
        found = _RULES_CACHE[key] = _rules_from_row(mentor)
        if len(_RULES_CACHE) > 4096:
            _RULES_CACHE.pop(next(iter(_RULES_CACHE)))
    return found


def _rules_from_row(mentor: Row[Any]) -> slots.Rules:
    weekly: dict[int, list[slots.Window]] = defaultdict(list)
    for window in mentor.weekly_windows:
        weekly[window["weekday"]].append(
            slots.Window(clock_minutes(window["start"]), clock_minutes(window["end"]))
        )
    overrides = {
        date.fromisoformat(o["date"]): tuple(
            slots.Window(clock_minutes(w["start"]), clock_minutes(w["end"])) for w in o["windows"]
        )
        for o in mentor.date_overrides
    }
    return slots.Rules(
        timezone=ZoneInfo(mentor.timezone),
        weekly=weekly,
        overrides=overrides,
        buffer_before=timedelta(minutes=mentor.buffer_before_minutes),
        buffer_after=timedelta(minutes=mentor.buffer_after_minutes),
        minimum_notice=timedelta(minutes=mentor.minimum_notice_minutes),
        slot_interval=timedelta(minutes=mentor.slot_interval_minutes),
        booking_horizon=timedelta(days=mentor.booking_horizon_days),
        max_per_day=mentor.max_sessions_per_day,
        max_per_week=mentor.max_sessions_per_week,
    )


def _mentor_event(type_: str, mentor: Row[Any]) -> CloudEvent:
    payload = events.MentorPayload(
        mentor_id=mentor.id,
        version=mentor.version,
        name=mentor.name,
        organisation=mentor.organisation,
        expertise=list(mentor.expertise),
        timezone=mentor.timezone,
    )
    return new_event(type_, payload, source=events.SOURCE, subject=str(mentor.id))


async def _replace_expertise(session: AsyncSession, mentor_id: uuid.UUID, tags: Sequence[str]) -> None:
    await session.execute(sa.delete(mentor_expertise).where(mentor_expertise.c.mentor_id == mentor_id))
    if tags:
        await session.execute(
            sa.insert(mentor_expertise), [{"mentor_id": mentor_id, "tag": tag} for tag in tags]
        )


async def register_mentor(session: AsyncSession, data: MentorIn, now: datetime) -> Row[Any]:
    availability = data.availability or AvailabilityIn()
    mentor_id = uuid.uuid4()
    await session.execute(
        sa.insert(mentors).values(
            id=mentor_id,
            version=1,
            name=data.name,
            email=data.email,
            organisation=data.organisation,
            anchor_id=data.anchor_id,
            bio=data.bio,
            expertise=list(data.expertise),
            timezone=data.timezone,
            session_lengths=list(data.session_lengths_minutes),
            max_active_mentees=data.max_active_mentees,
            max_sessions_per_week=data.max_sessions_per_week,
            active=True,
            created_at=now,
            updated_at=now,
            **_availability_values(availability),
        )
    )
    await _replace_expertise(session, mentor_id, data.expertise)
    mentor = await load_mentor(session, mentor_id)
    assert mentor is not None
    await outbox.add(session, _mentor_event(events.MENTOR_REGISTERED, mentor))
    return mentor


async def update_mentor(
    session: AsyncSession, mentor: Row[Any], patch: MentorPatch, now: datetime
) -> Row[Any]:
    changes: dict[str, Any] = {}
    for field in patch.model_fields_set:
        value = getattr(patch, field)
        column = "session_lengths" if field == "session_lengths_minutes" else field
        if getattr(mentor, column) != value:
            changes[column] = value
    if not changes:
        return mentor
    await session.execute(
        sa.update(mentors)
        .where(mentors.c.id == mentor.id)
        .values(**changes, version=mentors.c.version + 1, updated_at=now)
    )
    if "expertise" in changes:
        await _replace_expertise(session, mentor.id, changes["expertise"])
    updated = await load_mentor(session, mentor.id)
    assert updated is not None
    await outbox.add(session, _mentor_event(events.MENTOR_UPDATED, updated))
    return updated


async def set_availability(
    session: AsyncSession, mentor: Row[Any], availability: AvailabilityIn, now: datetime
) -> Row[Any]:
    """Replace the mentor's availability rules. Booked sessions stay as they are."""
    await session.execute(
        sa.update(mentors)
        .where(mentors.c.id == mentor.id)
        .values(
            **_availability_values(availability),
            timezone=availability.timezone or mentor.timezone,
            version=mentors.c.version + 1,
            updated_at=now,
        )
    )
    updated = await load_mentor(session, mentor.id)
    assert updated is not None
    await outbox.add(session, _mentor_event(events.AVAILABILITY_CHANGED, updated))
    return updated


async def list_mentors(
    session: AsyncSession,
    *,
    expertise: Sequence[str],
    organisation: str | None,
    active: bool | None,
    limit: int,
    cursor: str | None,
) -> tuple[list[Row[Any]], str | None]:
    query = sa.select(mentors)
    if expertise:
        query = query.where(
            mentors.c.id.in_(
                sa.select(mentor_expertise.c.mentor_id).where(mentor_expertise.c.tag.in_(expertise))
            )
        )
    if organisation is not None:
        query = query.where(mentors.c.organisation == organisation)
    if active is not None:
        query = query.where(mentors.c.active == active)
    return await MENTOR_ORDER.page(session, query, cursor, limit)
