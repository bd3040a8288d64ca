"""Calendars: a session's invitation, a mentor's feed and the feed's secret token."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncSession

from services.mentoring import calendars
from services.mentoring.models import mentors, sessions
from services.mentoring.read_models import enterprise_names
from services.mentoring.repository import (
    load_mentor,
)
from services.mentoring.settings import MentoringSettings


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def rotate_calendar_token(session: AsyncSession, mentor: Row[Any], now: datetime) -> str:
    """A new secret feed token; the previous one stops working with this commit."""
    token = secrets.token_urlsafe(32)
    await session.execute(
        sa.update(mentors)
        .where(mentors.c.id == mentor.id)
        .values(calendar_token_hash=_token_hash(token), calendar_token_rotated_at=now)
    )
    return token


async def revoke_calendar_token(session: AsyncSession, mentor: Row[Any], now: datetime) -> None:
    await session.execute(
        sa.update(mentors)
        .where(mentors.c.id == mentor.id)
        .values(calendar_token_hash=None, calendar_token_rotated_at=now)
    )


def feed_token_valid(mentor: Row[Any] | None, token: str | None) -> bool:
    if mentor is None or mentor.calendar_token_hash is None or not token:
        return False
    return hmac.compare_digest(_token_hash(token), mentor.calendar_token_hash)


def _calendar_session(row: Row[Any], names: dict[uuid.UUID, str | None]) -> calendars.CalendarSession:
    return calendars.CalendarSession(
        id=row.id,
        sequence=row.sequence,
        status=row.status,
        start=row.starts_at,
        end=row.ends_at,
        timezone=row.timezone,
        topic=row.topic,
        milestone_code=row.milestone_code,
        enterprise_id=row.enterprise_id,
        enterprise_name=names.get(row.enterprise_id),
        updated_at=row.updated_at,
        cancel_reason=row.cancel_reason,
    )


def _calendar_mentor(mentor: Row[Any]) -> calendars.CalendarMentor:
    return calendars.CalendarMentor(id=mentor.id, name=mentor.name, email=mentor.email)


async def session_invitation(session: AsyncSession, row: Row[Any]) -> bytes:
    mentor = await load_mentor(session, row.mentor_id)
    assert mentor is not None
    names = await enterprise_names(session, [row.enterprise_id])
    return calendars.invitation(_calendar_session(row, names), _calendar_mentor(mentor))


async def mentor_feed(
    session: AsyncSession, mentor: Row[Any], *, now: datetime, settings: MentoringSettings
) -> bytes:
    rows = (
        await session.execute(
            sa.select(sessions)
            .where(
                sessions.c.mentor_id == mentor.id,
                sessions.c.starts_at >= now - timedelta(days=settings.feed_past_days),
            )
            .order_by(sessions.c.starts_at, sessions.c.id)
            .limit(5000)
        )
    ).all()
    names = await enterprise_names(session, [row.enterprise_id for row in rows])
    return calendars.feed(
        _calendar_mentor(mentor),
        [_calendar_session(row, names) for row in rows],
        refresh=timedelta(minutes=15),
    )
