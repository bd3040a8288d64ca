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
from services.mentoring.jobs import reminder_decisions, send_due_reminders
from services.mentoring.models import session_reminders
from services.mentoring.settings import MentoringSettings
from services.mentoring.tests.helpers import Clock, book, create_mentor, london, stream_events
from shared.db import Database
from shared.outbox import outbox_table
from shared.testing.apps import STAFF, client, running

REMINDER = "mentoring.session.reminder_due.v1"


def test_the_nearest_due_reminder_is_sent_and_the_ones_it_overtakes_are_skipped() -> None:
    start = datetime(2027, 3, 29, 9, tzinfo=UTC)
    booked = start - timedelta(days=10)
    assert reminder_decisions(start, booked, start - timedelta(hours=30), [1440, 60], set()) == (None, [])
    assert reminder_decisions(start, booked, start - timedelta(hours=23), [1440, 60], set()) == (1440, [])
    assert reminder_decisions(start, booked, start - timedelta(minutes=50), [1440, 60], {1440}) == (60, [])
    # The service was down through both: only "in an hour" is still true.
    assert reminder_decisions(start, booked, start - timedelta(minutes=50), [1440, 60], set()) == (60, [1440])
    # Booked 20 hours ahead: there never was a moment for the 24-hour reminder.
    late_booking = start - timedelta(hours=20)
    assert reminder_decisions(start, late_booking, start - timedelta(hours=19), [1440, 60], set()) == (
        None,
        [1440],
    )
    assert reminder_decisions(start, booked, start - timedelta(minutes=50), [1440, 60], {1440, 60}) == (
        None,
        [],
    )


async def reminder_outbox(database: Database) -> list[dict]:
    async with database.transaction(write=False) as session:
        bodies = await session.scalars(
            sa.select(outbox_table.c.body)
            .where(outbox_table.c.subject == REMINDER)
            .order_by(outbox_table.c.position)
        )
        return [json.loads(body) for body in bodies]


async def race(database_url: str, now: datetime, replicas: int = 3, rounds: int = 3) -> int:
    """Several replicas (each its own engine and pool) handling the reminders at the same moment."""
    databases = [Database(database_url, pool_size=2) for _ in range(replicas)]
    try:
        calls = [send_due_reminders(db, now=now, page_size=1) for db in databases for _ in range(rounds)]
        return sum(await asyncio.gather(*calls))
    finally:
        for db in databases:
            await db.dispose()


async def test_racing_replicas_and_a_restart_publish_each_reminder_exactly_once(
    app, staff: httpx.AsyncClient, clock: Clock, database_url: str
) -> None:
    ada = await create_mentor(staff)
    upcoming = (await book(staff, ada["id"], uuid.uuid4(), london(2027, 3, 29, 10))).json()
    dropped = (await book(staff, ada["id"], uuid.uuid4(), london(2027, 3, 29, 14))).json()
    await staff.post(f"/api/v1/sessions/{dropped['id']}/cancel", json={"reason": "Not needed"})
    await book(staff, ada["id"], uuid.uuid4(), london(2027, 3, 2, 10))  # over long before the 29th

    # The app's own reminder job is one more replica racing these, on the same clock.
    clock.now = datetime(2027, 3, 28, 9, 30, tzinfo=UTC)  # the day before: the 24-hour reminder
    first = await race(database_url, clock.now)
    clock.now = datetime(2027, 3, 29, 8, 30, tzinfo=UTC)  # half an hour before: the 1-hour reminder
    second = await race(database_url, clock.now)
    # A replica that starts later (a restart) finds nothing left to send.
    assert await race(database_url, clock.now + timedelta(minutes=5), replicas=1, rounds=1) == 0

    sent = await reminder_outbox(app.state.database)
    assert [(e["data"]["session_id"], e["data"]["remind_before_minutes"]) for e in sent] == [
        (upcoming["id"], 1440),
        (upcoming["id"], 60),
    ]
    assert first <= 1 and second <= 1
    assert all(e["data"]["start"] == "2027-03-29T09:00:00Z" and e["type"] == REMINDER for e in sent)
    assert len({e["id"] for e in sent}) == 2


async def test_after_an_outage_only_the_nearest_due_reminder_is_sent(
    app, staff: httpx.AsyncClient, clock: Clock
) -> None:
    ada = await create_mentor(staff)
    session = (await book(staff, ada["id"], uuid.uuid4(), london(2027, 3, 29, 10))).json()
    clock.now = datetime(2027, 3, 29, 8, 15, tzinfo=UTC)  # nothing ran since the 1st
    assert await send_due_reminders(app.state.database, now=clock.now) == 1
    sent = await reminder_outbox(app.state.database)
    assert [e["data"]["remind_before_minutes"] for e in sent] == [60]
    async with app.state.database.transaction(write=False) as db:
        ledger = dict(
            (
                await db.execute(sa.select(session_reminders.c.offset_minutes, session_reminders.c.outcome))
            ).all()
        )
    assert ledger == {60: "published", 1440: "skipped"}
    assert session["id"] == sent[0]["subject"]


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
