"""Booking a session into a free slot, and moving it to another.

No double booking: on PostgreSQL a booking takes the mentor's and the enterprise's
advisory locks (so bookings of one mentor or one enterprise take turns, and
the daily and weekly limits hold), checks, and inserts under two exclusion constraints
that refuse any overlap of a mentor's (buffers included) or an enterprise's booked
sessions whatever the concurrency; on SQLite the request's write transaction begins
with ``BEGIN IMMEDIATE``, so the check and the insert happen under the database's
single write lock.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.engine import Row
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from services.mentoring import events, slots
from services.mentoring.models import ENTERPRISE_OVERLAP, MAX_BLOCKED_SPAN, MENTOR_OVERLAP, sessions
from services.mentoring.repository import (
    NEAR_MARGIN,
    WEEK_MARGIN,
    active_mentees,
    lock_for_booking,
    occupying,
    reload_session,
    sessions_near,
)
from services.mentoring.schemas import (
    RescheduleIn,
    SessionIn,
)
from services.mentoring.service.availability import check_duration
from services.mentoring.service.mentors import rules_of
from services.mentoring.service.sessions import require_booked, require_notice, session_event
from services.mentoring.settings import MentoringSettings
from services.mentoring.vocabulary import BOOKED, COUNTED_STATUSES
from shared import outbox
from shared.principal import Principal
from shared.problems import Problem, conflict, field_errors

T = TypeVar("T")


def _taken_problem(
    party: str, row: Row[Any] | None, mentor_id: uuid.UUID, enterprise_id: uuid.UUID
) -> Problem:
    who = f"mentor {mentor_id}" if party == "mentor" else f"enterprise {enterprise_id}"
    detail = f"The slot is no longer free: {who} already has a booked session at that time"
    named: dict[str, Any] = {"party": party}
    if party == "mentor":
        named["mentor_id"] = str(mentor_id)
    else:
        named["enterprise_id"] = str(enterprise_id)
    if row is not None:
        zone = ZoneInfo(row.timezone)
        start, end = row.starts_at.astimezone(zone).isoformat(), row.ends_at.astimezone(zone).isoformat()
        detail += f" (session {row.id}, {start} to {end})"
        named |= {"session_id": str(row.id), "start": start, "end": end}
    problem = conflict(detail + ".", conflict=named)
    problem.title = "Slot taken"
    problem.type = "slot-taken"
    return problem


def _refusal_problem(
    verdict: slots.Verdict,
    rules: slots.Rules,
    mentor: Row[Any],
    conflicting: Row[Any] | None,
    enterprise_id: uuid.UUID,
) -> Problem:
    refusal = verdict.refusal
    if refusal is slots.Refusal.TAKEN:
        return _taken_problem("mentor", conflicting, mentor.id, enterprise_id)
    if refusal is slots.Refusal.DAY_FULL:
        return Problem(
            409,
            "Mentor's day is full",
            f"The mentor takes at most {rules.max_per_day} sessions a day and that day is full.",
            type="day-full",
        )
    if refusal is slots.Refusal.WEEK_FULL:
        return Problem(
            409,
            "Mentor's week is full",
            f"The mentor takes at most {rules.max_per_week} sessions a week and that week is full.",
            type="week-full",
        )
    messages = {
        slots.Refusal.TOO_SOON: f"the mentor needs {mentor.minimum_notice_minutes} minutes' notice",
        slots.Refusal.TOO_FAR_AHEAD: (
            f"the mentor takes bookings at most {mentor.booking_horizon_days} days ahead"
        ),
        slots.Refusal.OUTSIDE_AVAILABILITY: "not one of the mentor's slots for this length: outside their "
        f"availability, or not on their {mentor.slot_interval_minutes}-minute steps",
    }
    return field_errors([{"field": "start", "message": messages[refusal]}])  # type: ignore[index]


async def _conflicting(
    session: AsyncSession,
    party: str,
    *,
    mentor_id: uuid.UUID,
    enterprise_id: uuid.UUID,
    low: datetime,
    high: datetime,
    excluding: uuid.UUID | None,
) -> Row[Any] | None:
    """A booked session of the mentor (its occupied time) or of the enterprise overlapping ``[low, high)``."""
    if party == "mentor":
        query = sa.select(sessions).where(sessions.c.mentor_id == mentor_id, *occupying(low, high))
    else:
        query = sa.select(sessions).where(
            sessions.c.enterprise_id == enterprise_id,
            sessions.c.starts_at < high,
            sessions.c.ends_at > low,
            sessions.c.starts_at > low - MAX_BLOCKED_SPAN,
        )
    query = query.where(sessions.c.status == BOOKED).order_by(sessions.c.starts_at).limit(1)
    if excluding is not None:
        query = query.where(sessions.c.id != excluding)
    return (await session.execute(query)).first()


async def _write_guarded(
    session: AsyncSession,
    write: Awaitable[T],
    *,
    mentor_id: uuid.UUID,
    enterprise_id: uuid.UUID,
    start: datetime,
    end: datetime,
    blocked: tuple[datetime, datetime],
    excluding: uuid.UUID | None,
) -> T:
    """Insert or move a booked session (``write``). Should PostgreSQL's exclusion constraints
    refuse it anyway (a writer that did not take the locks), the request fails with a 409
    naming the session it collided with, looked up outside the failed transaction."""
    try:
        return await write
    except IntegrityError as exc:
        message = str(exc.orig)
        if ENTERPRISE_OVERLAP in message:
            party, low, high = "enterprise", start, end
        elif MENTOR_OVERLAP in message:
            party, (low, high) = "mentor", blocked
        else:
            raise
        async with AsyncSession(session.bind) as other:
            row = await _conflicting(
                other,
                party,
                mentor_id=mentor_id,
                enterprise_id=enterprise_id,
                low=low,
                high=high,
                excluding=excluding,
            )
        raise _taken_problem(party, row, mentor_id, enterprise_id) from exc


def _margin(mentor: Row[Any]) -> timedelta:
    return WEEK_MARGIN if mentor.max_sessions_per_week is not None else NEAR_MARGIN


async def _sessions_nearby(
    session: AsyncSession,
    mentor: Row[Any],
    enterprise_id: uuid.UUID,
    start: datetime,
    end: datetime,
    *,
    excluding: uuid.UUID | None = None,
) -> tuple[list[slots.Taken], Row[Any] | None]:
    """The mentor's sessions that matter to a new one, as :class:`slots.Taken`, and a booked
    session of the enterprise overlapping it, if there is one."""
    query, params = sessions_near(mentor.id, enterprise_id, start, end, _margin(mentor), excluding=excluding)
    rows = (await session.execute(query, params)).all()
    return _sort_nearby(rows, mentor.id, enterprise_id, start, end)


def _sort_nearby(
    rows: Iterable[Any], mentor_id: uuid.UUID, enterprise_id: uuid.UUID, start: datetime, end: datetime
) -> tuple[list[slots.Taken], Any]:
    """The mentor's sessions as :class:`slots.Taken` (the session as ``ref``), and the soonest
    booked session of the enterprise overlapping ``[start, end)``, if any."""
    taken: list[slots.Taken] = []
    clash: Any = None
    for row in rows:
        if row.mentor_id == mentor_id and row.status in COUNTED_STATUSES:
            taken.append(
                slots.Taken(
                    start=row.starts_at,
                    blocked_from=row.blocked_from,
                    blocked_until=row.blocked_until,
                    blocks=row.status == BOOKED,
                    ref=row,
                )
            )
        overlapping = row.starts_at < end and row.ends_at > start
        theirs = row.enterprise_id == enterprise_id and row.status == BOOKED and overlapping
        if theirs and (clash is None or row.starts_at < clash.starts_at):
            clash = row
    return taken, clash


def _refused(
    verdict: slots.Verdict, rules: slots.Rules, mentor: Row[Any], enterprise_id: uuid.UUID
) -> Problem:
    conflicting = verdict.conflict.ref if verdict.conflict is not None else None
    return _refusal_problem(verdict, rules, mentor, conflicting, enterprise_id)  # type: ignore[arg-type]


async def book_session(
    session: AsyncSession,
    *,
    principal: Principal,
    data: SessionIn,
    now: datetime,
    settings: MentoringSettings,
) -> dict[str, Any]:
    """Book a free slot, or refuse with a problem naming why (and the session in the way):
    lock and read the mentor, read the sessions nearby, check the slot, insert, add the event."""
    start = data.start.astimezone(UTC)
    duration = timedelta(minutes=data.duration_minutes)
    end = start + duration
    mentor = await lock_for_booking(session, data.mentor_id, data.enterprise_id)
    if mentor is None:
        raise field_errors([{"field": "mentor_id", "message": "no mentor with this id"}])
    if not mentor.active:
        raise field_errors([{"field": "mentor_id", "message": "this mentor is not taking bookings"}])
    check_duration(mentor, data.duration_minutes, "duration_minutes")
    rules = rules_of(mentor)
    blocked = slots.occupied_range(rules, start, duration)
    taken, clash = await _sessions_nearby(session, mentor, data.enterprise_id, start, end)
    verdict = slots.check_slot(rules, duration, start, now, taken)
    if not verdict.free:
        raise _refused(verdict, rules, mentor, data.enterprise_id)
    if clash is not None:
        raise _taken_problem("enterprise", clash, mentor.id, data.enterprise_id)
    if mentor.max_active_mentees is not None:
        mentees = (await active_mentees(session, [mentor.id], now, settings))[mentor.id]
        if data.enterprise_id not in mentees and len(mentees) >= mentor.max_active_mentees:
            raise Problem(
                409,
                "Mentor at capacity",
                f"The mentor already has {len(mentees)} active mentees, their maximum.",
                type="mentor-at-capacity",
            )

    row = {
        "id": uuid.uuid4(),
        "mentor_id": mentor.id,
        "enterprise_id": data.enterprise_id,
        "starts_at": start,
        "ends_at": end,
        "blocked_from": blocked[0],
        "blocked_until": blocked[1],
        "timezone": mentor.timezone,
        "duration_minutes": data.duration_minutes,
        "topic": data.topic,
        "milestone_code": data.milestone_code,
        "status": BOOKED,
        "sequence": 0,
        "booked_by_role": principal.role,
        "booked_by": principal.actor,
        "scheduled_at": now,
        "created_at": now,
        "updated_at": now,
    }
    await _write_guarded(
        session,
        session.execute(sa.insert(sessions), row),
        mentor_id=mentor.id,
        enterprise_id=data.enterprise_id,
        start=start,
        end=end,
        blocked=blocked,
        excluding=None,
    )
    await outbox.add(session, session_event(events.SESSION_BOOKED, row))
    return row


async def reschedule_session(
    session: AsyncSession,
    row: Row[Any],
    *,
    principal: Principal,
    data: RescheduleIn,
    now: datetime,
    settings: MentoringSettings,
) -> Row[Any]:
    """Move a booked session (same id, same UID, higher sequence) to another free slot."""
    require_booked(row, "rescheduled")
    mentor = await lock_for_booking(session, row.mentor_id, row.enterprise_id)
    assert mentor is not None
    require_notice(row, mentor, principal, now, "rescheduled")
    minutes = data.duration_minutes or row.duration_minutes
    if minutes != row.duration_minutes:
        check_duration(mentor, minutes, "duration_minutes")
    rules = rules_of(mentor)
    start = data.start.astimezone(UTC)
    duration = timedelta(minutes=minutes)
    end = start + duration
    if start == row.starts_at and minutes == row.duration_minutes:
        return row
    blocked = slots.occupied_range(rules, start, duration)
    taken, clash = await _sessions_nearby(session, mentor, row.enterprise_id, start, end, excluding=row.id)
    verdict = slots.check_slot(rules, duration, start, now, taken)
    if not verdict.free:
        raise _refused(verdict, rules, mentor, row.enterprise_id)
    if clash is not None:
        raise _taken_problem("enterprise", clash, mentor.id, row.enterprise_id)
    await _write_guarded(
        session,
        session.execute(
            sa.update(sessions)
            .where(sessions.c.id == row.id)
            .values(
                starts_at=start,
                ends_at=end,
                blocked_from=blocked[0],
                blocked_until=blocked[1],
                duration_minutes=minutes,
                timezone=mentor.timezone,
                sequence=sessions.c.sequence + 1,
                reschedule_reason=data.reason,
                scheduled_at=now,  # its reminders are counted from now, for the new start
                updated_at=now,
            ),
        ),
        mentor_id=mentor.id,
        enterprise_id=row.enterprise_id,
        start=start,
        end=end,
        blocked=blocked,
        excluding=row.id,
    )
    moved = await reload_session(session, row.id)
    await outbox.add(session, session_event(events.SESSION_RESCHEDULED, moved))
    return moved
