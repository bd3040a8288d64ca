"""Reminders: each one published exactly once, by racing replicas, across restarts, and again only
for a session's new time after a reschedule; never for a cancelled or already started session."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import sqlalchemy as sa

from services.mentoring.app import create_app
from services.mentoring.models import session_reminders
from services.mentoring.reminders import send_due_reminders
from services.mentoring.service import reminder_schedule
from services.mentoring.settings import MentoringSettings
from services.mentoring.tests.helpers import Clock, book, create_mentor, london, stream_events
from shared.db import Database
from shared.outbox import outbox_table
from shared.testing.apps import STAFF, client, running

REMINDER = "mentoring.session.reminder_due.v1"


def test_only_reminders_still_ahead_are_scheduled() -> None:
    start = datetime(2027, 3, 29, 9, tzinfo=UTC)
    assert reminder_schedule(start, start - timedelta(days=3), [1440, 60]) == [
        (1440, start - timedelta(hours=24)),
        (60, start - timedelta(hours=1)),
    ]
    assert reminder_schedule(start, start - timedelta(hours=5), [1440, 60]) == [
        (60, start - timedelta(hours=1))
    ]
    assert reminder_schedule(start, start - timedelta(minutes=30), [1440, 60]) == []


async def reminder_outbox(database: Database) -> list[dict]:
    async with database.transaction(write=False) as session:
        bodies = await session.scalars(
            sa.select(outbox_table.c.body).where(outbox_table.c.subject == REMINDER)
        )
        return [json.loads(body) for body in bodies]


async def test_racing_replicas_and_a_restart_publish_each_reminder_exactly_once(
    app, staff: httpx.AsyncClient, clock: Clock, database_url: str
) -> None:
    ada = await create_mentor(staff)
    upcoming = (await book(staff, ada["id"], uuid.uuid4(), london(2027, 3, 29, 10))).json()
    dropped = (await book(staff, ada["id"], uuid.uuid4(), london(2027, 3, 29, 14))).json()
    await staff.post(f"/api/v1/sessions/{dropped['id']}/cancel", json={"reason": "Not needed"})
    started = (await book(staff, ada["id"], uuid.uuid4(), london(2027, 3, 2, 10))).json()

    clock.now = datetime(2027, 3, 29, 8, 30, tzinfo=UTC)  # 30 minutes before the upcoming one
    replicas = [Database(database_url, pool_size=3) for _ in range(3)]
    try:
        rounds = [send_due_reminders(db, now=clock.now, batch_size=1) for db in replicas for _ in range(3)]
        published = sum(await asyncio.gather(*rounds))
        restarted = Database(database_url, pool_size=1)  # a replica that starts later finds nothing left
        published += await send_due_reminders(restarted, now=clock.now + timedelta(minutes=5))
        sent = await reminder_outbox(restarted)
        await restarted.dispose()
    finally:
        for db in replicas:
            await db.dispose()

    # The app's own reminder job is a fourth replica racing the others; together they sent two.
    assert len(sent) == 2
    assert published <= 2
    assert sorted((e["data"]["session_id"], e["data"]["remind_before_minutes"]) for e in sent) == [
        (upcoming["id"], 60),
        (upcoming["id"], 1440),
    ]
    assert all(e["data"]["start"] == "2027-03-29T09:00:00Z" for e in sent)
    async with app.state.database.transaction(write=False) as session:
        outcomes = dict(
            (
                await session.execute(
                    sa.select(session_reminders.c.session_id, session_reminders.c.outcome).where(
                        session_reminders.c.session_id == uuid.UUID(started["id"]),
                    )
                )
            ).all()
        )
        left = await session.scalar(
            sa.select(sa.func.count())
            .select_from(session_reminders)
            .where(session_reminders.c.sent_at.is_(None))
        )
    assert set(outcomes.values()) == {"skipped"}  # it started weeks ago: too late to remind
    assert left == 0  # the cancelled session's reminders went with it


async def test_two_running_replicas_put_each_reminder_on_the_stream_once(
    settings: MentoringSettings, nats_url: str
) -> None:
    clock = Clock()
    tuned = settings.model_copy(
        update={"reminder_interval_seconds": 0.05, "reminder_offsets_minutes": [120, 30]}
    )
    first, second = create_app(tuned, clock=clock), create_app(tuned, clock=clock)
    async with running(first), running(second), client(first, STAFF) as staff:
        ada = await create_mentor(staff)
        start = clock.now + timedelta(hours=3)
        session = (await book(staff, ada["id"], uuid.uuid4(), start.astimezone(UTC))).json()
        assert session["status"] == "booked", session

        clock.now = start - timedelta(minutes=100)
        await stream_events(nats_url, at_least=3)  # registered, booked, the 120-minute reminder
        clock.now = start - timedelta(minutes=20)
        await stream_events(nats_url, at_least=4)

        # Whatever the two replicas' jobs do from now on finds nothing left to send.
        assert await asyncio.gather(
            send_due_reminders(first.state.database, now=clock.now),
            send_due_reminders(second.state.database, now=clock.now),
        ) == [0, 0]
        assert len(await reminder_outbox(first.state.database)) == 2
    events = await stream_events(nats_url, at_least=4)
    reminders = [e for e in events if e["type"] == REMINDER]
    assert [(e["data"]["session_id"], e["data"]["remind_before_minutes"]) for e in reminders] == [
        (session["id"], 120),
        (session["id"], 30),
    ]
    assert len(events) == 4


async def test_a_rescheduled_session_is_reminded_again_for_its_new_time(
    app, staff: httpx.AsyncClient, clock: Clock
) -> None:
    ada = await create_mentor(staff)
    session = (await book(staff, ada["id"], uuid.uuid4(), london(2027, 3, 29, 10))).json()
    clock.now = datetime(2027, 3, 28, 10, tzinfo=UTC)  # the 24-hour reminder is due
    database: Database = app.state.database
    await send_due_reminders(database, now=clock.now)
    moved = await staff.post(
        f"/api/v1/sessions/{session['id']}/reschedule", json={"start": "2027-03-31T10:00:00+01:00"}
    )
    assert moved.status_code == 200, moved.text
    assert await send_due_reminders(database, now=clock.now) == 0  # nothing due for the new time yet
    clock.now = datetime(2027, 3, 30, 9, 5, tzinfo=UTC)
    await send_due_reminders(database, now=clock.now)
    sent = await reminder_outbox(database)
    assert [
        (e["data"]["start"], e["data"]["remind_before_minutes"], e["data"]["sequence"]) for e in sent
    ] == [
        ("2027-03-29T09:00:00Z", 1440, 0),
        ("2027-03-31T09:00:00Z", 1440, 1),
    ]
    assert len({e["id"] for e in sent}) == 2
