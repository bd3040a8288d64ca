"""Session reminders: ``mentoring.session.reminder_due.v1`` once per reminder, whatever happens.

Which reminders a session has is derived, not stored: every configured offset (by default
24 h and 1 h) before the start of a booked session, if that moment came after the session
was booked or last moved. A periodic job in every replica finds the booked sessions that
start within the largest offset and still have reminders to handle, and records each
reminder it handles in ``session_reminders`` (session, offset, start) in the transaction
that writes its event to the outbox. That row's key is what makes a reminder happen exactly
once: with several replicas, only one transaction can insert it (the others' inserts do
nothing), and across restarts it is still there. On PostgreSQL the job also reads the
sessions ``FOR NO KEY UPDATE SKIP LOCKED``, so replicas share the work instead of queueing;
on SQLite its write transaction holds the database lock.

A moved session has a new start, so it gets its reminders again; a cancelled or finished
one is no longer booked, so it gets none. When several reminders of a session are due at
once (the service was down), only the nearest is sent and the others are recorded as
skipped: a "24 hours before" message half an hour before the session would mislead.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncSession

from services.mentoring import events
from services.mentoring.models import session_reminders, sessions
from services.mentoring.repository import SESSION_ORDER
from services.mentoring.settings import MentoringSettings
from services.mentoring.vocabulary import BOOKED
from shared import outbox
from shared.db import Database, insert_of
from shared.events import CloudEvent
from shared.runtime import PeriodicJob, ServiceRuntime

PUBLISHED = "published"
SKIPPED = "skipped"
_EVENT_IDS = uuid.UUID("6f1c1b52-3a52-4a5e-9d0c-6c7d3f1e2a10")


def reminder_event_id(session_id: uuid.UUID, offset_minutes: int, starts_at: datetime) -> str:
    """The same reminder always has the same event id (a second copy would be a JetStream duplicate)."""
    return str(uuid.uuid5(_EVENT_IDS, f"{session_id}:{offset_minutes}:{starts_at.isoformat()}"))


def reminder_decisions(
    start: datetime, scheduled_at: datetime, now: datetime, offsets: Sequence[int], handled: set[int]
) -> tuple[int | None, list[int]]:
    """For a booked session that has not started: the reminder to publish now (the nearest of
    those due), and the due ones to record as skipped (due before the session was booked or
    moved, or overtaken by a nearer one)."""
    due = [o for o in offsets if o not in handled and start - timedelta(minutes=o) <= now]
    skipped = [o for o in due if start - timedelta(minutes=o) <= scheduled_at]
    live = [o for o in due if o not in skipped]
    if not live:
        return None, skipped
    nearest = min(live)
    return nearest, skipped + [o for o in live if o != nearest]


def _payload(row: Row[Any], offset: int) -> dict[str, Any]:
    return events.SessionReminderPayload(
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
        remind_before_minutes=offset,
    ).model_dump(mode="json")


def _ledger(session: AsyncSession, row: Row[Any], offset: int, now: datetime, outcome: str) -> sa.Executable:
    """Record a reminder as handled; does nothing if a replica already did (the key decides)."""
    values = {"offset_minutes": offset, "starts_at": row.starts_at, "handled_at": now, "outcome": outcome}
    statement: sa.Executable = (
        insert_of(session, session_reminders).values(session_id=row.id, **values).on_conflict_do_nothing()
    )
    return statement


async def _handle_page(
    session: AsyncSession,
    now: datetime,
    offsets: Sequence[int],
    after: tuple[datetime, uuid.UUID] | None,
    page_size: int,
) -> tuple[int, list[Row[Any]]]:
    """Handle the due reminders of one page of upcoming sessions; (published, the page's sessions)."""
    postgres = session.get_bind().dialect.name == "postgresql"
    handled_count = (
        sa.select(sa.func.count())
        .select_from(session_reminders)
        .where(
            session_reminders.c.session_id == sessions.c.id,
            session_reminders.c.starts_at == sessions.c.starts_at,
        )
        .scalar_subquery()
    )
    due = sa.select(sessions).where(
        sessions.c.status == BOOKED,
        sessions.c.starts_at > now,
        sessions.c.starts_at <= now + timedelta(minutes=max(offsets)),
        handled_count < len(offsets),
    )
    query = SESSION_ORDER.select(due, after, page_size)
    if postgres:
        query = query.with_for_update(key_share=True, skip_locked=True, of=sessions)
    rows = list((await session.execute(query)).all())
    if not rows:
        return 0, rows
    handled: dict[tuple[uuid.UUID, datetime], set[int]] = defaultdict(set)
    for found in await session.execute(
        sa.select(session_reminders).where(session_reminders.c.session_id.in_([row.id for row in rows]))
    ):
        handled[(found.session_id, found.starts_at)].add(found.offset_minutes)
    published = 0
    for row in rows:
        publish, skip = reminder_decisions(
            row.starts_at, row.scheduled_at, now, offsets, handled[(row.id, row.starts_at)]
        )
        for offset in skip:
            await session.execute(_ledger(session, row, offset, now, SKIPPED))
        if publish is None:
            continue
        claimed = await session.execute(_ledger(session, row, publish, now, PUBLISHED))
        if claimed.rowcount != 1:  # type: ignore[attr-defined]
            continue  # another replica handled it first
        await outbox.add(
            session,
            CloudEvent(
                id=reminder_event_id(row.id, publish, row.starts_at),
                type=events.SESSION_REMINDER_DUE,
                source=events.SOURCE,
                subject=str(row.id),
                time=now,
                data=_payload(row, publish),
            ),
        )
        published += 1
    return published, rows


async def send_due_reminders(
    database: Database, *, now: datetime, offsets: Sequence[int] = (1440, 60), page_size: int = 200
) -> int:
    """Publish (through the outbox) every reminder due at ``now``; returns how many this call sent."""
    if not offsets:
        return 0
    total = 0
    after: tuple[datetime, uuid.UUID] | None = None
    while True:
        async with database.transaction() as session:
            published, rows = await _handle_page(session, now, offsets, after, page_size)
        total += published
        if len(rows) < page_size:
            return total
        after = (rows[-1].starts_at, rows[-1].id)


def reminder_job(settings: MentoringSettings, clock: Callable[[], datetime]) -> PeriodicJob:
    async def run(runtime: ServiceRuntime) -> None:
        await send_due_reminders(
            runtime.database,
            now=clock(),
            offsets=settings.reminder_offsets_minutes,
            page_size=settings.reminder_batch_size,
        )

    return PeriodicJob("session-reminders", settings.reminder_interval_seconds, run)
