"""Session reminders: ``mentoring.session.reminder_due.v1`` once per reminder, whatever happens.

A booking writes one row per reminder (``session_reminders``, by default 24 h and
1 h before the start). A periodic job in every replica claims due rows and writes
their events to the outbox in the same transaction. Exactly once, with several
replicas and across restarts, because the state is in the database and a reminder
is claimed by a conditional update (``sent_at IS NULL``) that only one transaction
can win; on PostgreSQL the batch is also read ``FOR UPDATE SKIP LOCKED`` so replicas
take different rows instead of queueing, and on SQLite the job's write transaction
holds the database lock. A reminder whose session was cancelled or has already
started (the service was down) is marked skipped, not sent late.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from services.mentoring import events
from services.mentoring.models import BOOKED, session_reminders, sessions
from services.mentoring.settings import MentoringSettings
from shared import outbox
from shared.db import Database
from shared.events import CloudEvent
from shared.runtime import PeriodicJob, ServiceRuntime

PUBLISHED = "published"
SKIPPED = "skipped"
_EVENT_IDS = uuid.UUID("6f1c1b52-3a52-4a5e-9d0c-6c7d3f1e2a10")


def reminder_event_id(session_id: uuid.UUID, offset_minutes: int, due_at: datetime) -> str:
    """The same reminder always has the same event id (a second copy would be a JetStream duplicate)."""
    return str(uuid.uuid5(_EVENT_IDS, f"{session_id}:{offset_minutes}:{due_at.isoformat()}"))


async def _claim_batch(session: AsyncSession, now: datetime, batch_size: int) -> tuple[int, int]:
    """Claim up to ``batch_size`` due reminders; (published, claimed)."""
    query = (
        sa.select(
            session_reminders.c.session_id,
            session_reminders.c.offset_minutes,
            session_reminders.c.due_at,
            sessions,
        )
        .join(sessions, sessions.c.id == session_reminders.c.session_id)
        .where(session_reminders.c.sent_at.is_(None), session_reminders.c.due_at <= now)
        .order_by(session_reminders.c.due_at)
        .limit(batch_size)
    )
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True, of=session_reminders)
    rows = (await session.execute(query)).all()
    published = 0
    for row in rows:
        send = row.status == BOOKED and row.starts_at > now
        claimed = await session.execute(
            sa.update(session_reminders)
            .where(
                session_reminders.c.session_id == row.session_id,
                session_reminders.c.offset_minutes == row.offset_minutes,
                session_reminders.c.sent_at.is_(None),
            )
            .values(sent_at=now, outcome=PUBLISHED if send else SKIPPED)
        )
        if claimed.rowcount != 1 or not send:  # type: ignore[attr-defined]
            continue  # another replica won it, or it is not worth sending any more
        payload = events.SessionReminderPayload(
            session_id=row.id,
            sequence=row.sequence,
            mentor_id=row.mentor_id,
            enterprise_id=row.enterprise_id,
            start=row.starts_at,
            end=row.ends_at,
            timezone=row.timezone,
            topic=row.topic,
            status=row.status,
            milestone_code=row.milestone_code,
            remind_before_minutes=row.offset_minutes,
        )
        await outbox.add(
            session,
            CloudEvent(
                id=reminder_event_id(row.session_id, row.offset_minutes, row.due_at),
                type=events.SESSION_REMINDER_DUE,
                source=events.SOURCE,
                subject=str(row.session_id),
                time=now,
                data=payload.model_dump(mode="json"),
            ),
        )
        published += 1
    return published, len(rows)


async def send_due_reminders(database: Database, *, now: datetime, batch_size: int = 200) -> int:
    """Publish (through the outbox) every reminder due at ``now``; returns how many."""
    total = 0
    while True:
        async with database.transaction() as session:
            published, claimed = await _claim_batch(session, now, batch_size)
        total += published
        if claimed < batch_size:
            return total


def reminder_job(settings: MentoringSettings, clock: Callable[[], datetime]) -> PeriodicJob:
    async def run(runtime: ServiceRuntime) -> None:
        await send_due_reminders(runtime.database, now=clock(), batch_size=settings.reminder_batch_size)

    return PeriodicJob("session-reminders", settings.reminder_interval_seconds, run)
