"""Sessions after booking: the list, cancellation, outcome and no-show, and their events."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncSession

from services.mentoring import events
from services.mentoring.models import sessions
from services.mentoring.repository import (
    SESSION_ORDER,
    load_mentor,
    reload_session,
)
from services.mentoring.schemas import (
    CancelIn,
    CompleteIn,
    NoShowIn,
)
from services.mentoring.vocabulary import BOOKED, CANCELLED, COMPLETED, NO_SHOW
from shared import outbox
from shared.events import CloudEvent, new_event
from shared.principal import Principal
from shared.problems import Problem


async def list_sessions(
    session: AsyncSession,
    *,
    mentor_id: uuid.UUID | None,
    enterprise_id: uuid.UUID | None,
    start_from: datetime | None,
    start_to: datetime | None,
    statuses: Sequence[str],
    limit: int,
    cursor: str | None,
) -> tuple[list[Row[Any]], str | None]:
    query = sa.select(sessions)
    if mentor_id is not None:
        query = query.where(sessions.c.mentor_id == mentor_id)
    if enterprise_id is not None:
        query = query.where(sessions.c.enterprise_id == enterprise_id)
    if start_from is not None:
        query = query.where(sessions.c.starts_at >= start_from)
    if start_to is not None:
        query = query.where(sessions.c.starts_at < start_to)
    if statuses:
        query = query.where(sessions.c.status.in_(statuses))
    return await SESSION_ORDER.page(session, query, cursor, limit)


def _session_payload_fields(row: Row[Any] | dict[str, Any]) -> dict[str, Any]:
    get = row.__getitem__ if isinstance(row, dict) else lambda key: getattr(row, key)
    return {
        "session_id": get("id"),
        "sequence": get("sequence"),
        "mentor_id": get("mentor_id"),
        "enterprise_id": get("enterprise_id"),
        "start": get("starts_at"),
        "end": get("ends_at"),
        "timezone": get("timezone"),
        "topic": get("topic"),
        "status": get("status"),
        "milestone_code": get("milestone_code"),
    }


def session_event(type_: str, row: Row[Any] | dict[str, Any], **extra: Any) -> CloudEvent:
    models = {
        events.SESSION_CANCELLED: events.SessionCancelledPayload,
        events.SESSION_COMPLETED: events.SessionCompletedPayload,
        events.SESSION_REMINDER_DUE: events.SessionReminderPayload,
    }
    payload = models.get(type_, events.SessionPayload)(**_session_payload_fields(row), **extra)
    return new_event(type_, payload, source=events.SOURCE, subject=str(payload.session_id))


def require_booked(row: Row[Any], action: str) -> None:
    if row.status != BOOKED:
        raise Problem(
            409,
            "Session not booked",
            f"Only a booked session can be {action}; this one is {row.status.replace('_', ' ')}.",
            type="session-not-booked",
            status_now=row.status,
        )


def require_notice(row: Row[Any], mentor: Row[Any], principal: Principal, now: datetime, action: str) -> None:
    """Participants change a session only before it starts and with the mentor's cancellation
    notice; staff may do it at any time before it starts."""
    if row.starts_at <= now:
        raise Problem(
            409,
            "Session already started",
            f"A session cannot be {action} once it has started.",
            type="session-started",
        )
    notice = timedelta(minutes=mentor.cancellation_notice_minutes)
    if not principal.is_staff and row.starts_at - now < notice:
        raise Problem(
            409,
            "Too late to change",
            f"This mentor's sessions can be {action} up to {mentor.cancellation_notice_minutes} minutes "
            "before they start; ask the incubator staff.",
            type="cancellation-notice",
        )


async def cancel_session(
    session: AsyncSession, row: Row[Any], *, principal: Principal, data: CancelIn, now: datetime
) -> Row[Any]:
    require_booked(row, "cancelled")
    mentor = await load_mentor(session, row.mentor_id)
    assert mentor is not None
    require_notice(row, mentor, principal, now, "cancelled")
    values = {"cancel_reason": data.reason, "cancelled_by_role": principal.role, "cancelled_at": now}
    return await _end_session(
        session, row, CANCELLED, events.SESSION_CANCELLED, now, values, reason=data.reason
    )


async def _end_session(
    session: AsyncSession,
    row: Row[Any],
    status: str,
    event_type: str,
    now: datetime,
    values: dict[str, Any],
    **event_extra: Any,
) -> Row[Any]:
    """Move a booked session to ``status`` (a higher sequence) and announce it."""
    await session.execute(
        sa.update(sessions)
        .where(sessions.c.id == row.id)
        .values(status=status, sequence=sessions.c.sequence + 1, updated_at=now, **values)
    )
    ended = await reload_session(session, row.id)
    await outbox.add(session, session_event(event_type, ended, **event_extra))
    return ended


def _require_started(row: Row[Any], now: datetime, action: str) -> None:
    if now < row.starts_at:
        raise Problem(
            409,
            "Session not started",
            f"A session can be {action} only once it has started ({row.starts_at.isoformat()}).",
            type="session-not-started",
        )


async def complete_session(
    session: AsyncSession, row: Row[Any], *, data: CompleteIn, now: datetime
) -> Row[Any]:
    """Record the outcome and the milestones the mentor signs off (the enterprises service
    records the sign-offs from the event)."""
    require_booked(row, "completed")
    _require_started(row, now, "completed")
    signed_off = list(data.signed_off_milestones)
    values = {
        "outcome": data.outcome,
        "notes": data.notes,
        "action_items": list(data.action_items),
        "signed_off_milestones": signed_off,
        "closed_at": now,
    }
    return await _end_session(
        session,
        row,
        COMPLETED,
        events.SESSION_COMPLETED,
        now,
        values,
        outcome=data.outcome,
        signed_off_milestones=signed_off,
    )


async def record_no_show(session: AsyncSession, row: Row[Any], *, data: NoShowIn, now: datetime) -> Row[Any]:
    require_booked(row, "marked as a no-show")
    _require_started(row, now, "marked as a no-show")
    values = {"absent_party": data.absent_party, "notes": data.note, "closed_at": now}
    return await _end_session(session, row, NO_SHOW, events.SESSION_NO_SHOW, now, values)
