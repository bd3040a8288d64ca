"""The database itself refuses double bookings (PostgreSQL exclusion constraints), a booking that
loses the race at its insert gets a 409 naming the winner, and the migrations run both ways."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from services.mentoring.models import MAX_BLOCKED_SPAN, sessions
from services.mentoring.repository import WEEK_MARGIN, sessions_near
from services.mentoring.schemas import AvailabilityIn, SessionIn
from services.mentoring.tests.helpers import book, create_mentor, london
from shared.db import create_engine
from shared.migrations import alembic_config
from shared.testing.databases import DatabaseFactory, alembic_prepare

SERVICE_DIR = Path(__file__).resolve().parent.parent
postgres_only = pytest.mark.parametrize("db_backend", ["postgres"], indirect=True)


def session_row(
    mentor_id: str, enterprise_id: uuid.UUID, start: datetime, *, buffer: int = 0, status="booked"
):
    end = start + timedelta(hours=1)
    now = datetime(2027, 3, 1, tzinfo=UTC)
    return {
        "id": uuid.uuid4(),
        "mentor_id": uuid.UUID(mentor_id),
        "enterprise_id": enterprise_id,
        "starts_at": start,
        "ends_at": end,
        "blocked_from": start - timedelta(minutes=buffer),
        "blocked_until": end + timedelta(minutes=buffer),
        "timezone": "Europe/London",
        "duration_minutes": 60,
        "topic": "direct insert",
        "status": status,
        "sequence": 0,
        "booked_by_role": "staff",
        "booked_by": "test",
        "scheduled_at": now,
        "created_at": now,
        "updated_at": now,
    }


async def insert(app, row: dict) -> None:
    async with app.state.database.transaction() as session:
        await session.execute(sa.insert(sessions).values(row))


@postgres_only
async def test_postgres_refuses_overlapping_booked_sessions_of_a_mentor_or_an_enterprise(app, staff) -> None:
    ada = await create_mentor(staff)
    await insert(app, session_row(ada["id"], uuid.uuid4(), london(2027, 3, 29, 10), buffer=15))
    with pytest.raises(IntegrityError, match="ex_sessions_mentor_overlap"):
        # Starts ten minutes after the first ends, inside its fifteen-minute buffer.
        await insert(app, session_row(ada["id"], uuid.uuid4(), london(2027, 3, 29, 11, 10)))
    firm = uuid.uuid4()
    bob = await create_mentor(staff, name="Bob", email="bob@example.org")
    await insert(app, session_row(bob["id"], firm, london(2027, 3, 30, 10)))
    with pytest.raises(IntegrityError, match="ex_sessions_enterprise_overlap"):
        await insert(app, session_row(ada["id"], firm, london(2027, 3, 30, 10, 30)))
    # Cancelled sessions hold no time; back-to-back sessions do not overlap.
    await insert(app, session_row(ada["id"], firm, london(2027, 3, 30, 10, 30), status="cancelled"))
    await insert(app, session_row(ada["id"], firm, london(2027, 3, 30, 11)))


async def _wait_until_blocked(app) -> None:
    """Until a statement of this database waits for a lock (the booking's insert, on the constraint)."""
    query = sa.text(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    for _ in range(500):
        async with app.state.database.engine.connect() as conn:
            if await conn.scalar(query):
                return
        await asyncio.sleep(0.01)
    raise AssertionError("the booking never waited on the other transaction")


@postgres_only
@pytest.mark.parametrize("party", ["mentor", "enterprise"])
async def test_a_booking_that_loses_the_race_at_its_insert_gets_409_naming_the_winner(
    app, staff, party
) -> None:
    ada = await create_mentor(staff)
    bob = await create_mentor(staff, name="Bob", email="bob@example.org")
    firm = uuid.uuid4()
    start = london(2027, 3, 29, 10)
    # Another transaction has inserted the winning session but not committed: the booking's
    # check cannot see it, so only the exclusion constraint can stop the second session.
    winner = session_row(ada["id"], firm if party == "enterprise" else uuid.uuid4(), start)
    async with app.state.database.engine.connect() as other:
        transaction = await other.begin()
        await other.execute(sa.insert(sessions).values(winner))
        mentor_id = bob["id"] if party == "enterprise" else ada["id"]
        attempt = asyncio.create_task(book(staff, mentor_id, firm, start))
        await _wait_until_blocked(app)
        await transaction.commit()
        response = await attempt
    assert response.status_code == 409, response.text
    conflict = response.json()["conflict"]
    assert conflict["party"] == party
    assert conflict["session_id"] == str(winner["id"])


async def test_migrations_go_down_to_nothing_and_up_again(
    db_backend: str, database_factory: DatabaseFactory
) -> None:
    from alembic import command

    url = await database_factory.create(db_backend, "mentoring", alembic_prepare(SERVICE_DIR))
    config = alembic_config(SERVICE_DIR, url)
    await asyncio.to_thread(command.downgrade, config, "base")
    await asyncio.to_thread(command.upgrade, config, "head")
    engine = create_engine(url, pooled=False)
    try:
        async with engine.connect() as conn:
            tables = await conn.run_sync(lambda sync: set(sa.inspect(sync).get_table_names()))
    finally:
        await engine.dispose()
    assert {"mentors", "mentor_expertise", "sessions", "session_reminders", "enterprises", "outbox"} <= tables


async def test_a_sessions_occupied_time_never_spans_more_than_two_days(app, staff) -> None:
    """The queries around a booking read only sessions starting within MAX_BLOCKED_SPAN of it;
    the table guarantees that none is longer (its buffers included)."""
    ada = await create_mentor(staff)
    longest = session_row(ada["id"], uuid.uuid4(), london(2027, 3, 29, 10))
    longest["blocked_from"] = longest["starts_at"] - MAX_BLOCKED_SPAN / 2
    longest["blocked_until"] = longest["starts_at"] + MAX_BLOCKED_SPAN / 2
    await insert(app, longest)
    too_long = session_row(ada["id"], uuid.uuid4(), london(2027, 4, 12, 10))
    too_long["blocked_until"] = too_long["blocked_from"] + MAX_BLOCKED_SPAN + timedelta(minutes=1)
    with pytest.raises(IntegrityError, match=r"ck_sessions_blocked_span|CHECK constraint failed"):
        await insert(app, too_long)


def test_the_longest_session_the_schemas_allow_fits_the_span() -> None:
    def most(model: type, field: str) -> int:
        return next(rule.le for rule in model.model_fields[field].metadata if hasattr(rule, "le"))

    longest = (
        most(SessionIn, "duration_minutes")
        + most(AvailabilityIn, "buffer_before_minutes")
        + most(AvailabilityIn, "buffer_after_minutes")
    )
    assert timedelta(minutes=longest) <= MAX_BLOCKED_SPAN


@pytest.mark.parametrize("db_backend", ["sqlite"], indirect=True)
async def test_the_reads_around_a_booking_take_a_range_of_the_indexes_not_a_whole_history(app) -> None:
    someone, firm, start = uuid.uuid4(), uuid.uuid4(), datetime(2027, 3, 29, 9, tzinfo=UTC)
    statements = [
        sessions_near(someone, firm, start, start + timedelta(hours=1), WEEK_MARGIN, excluding=None)[0],
        sessions_near(someone, firm, start, start + timedelta(hours=1), WEEK_MARGIN, excluding=uuid.uuid4())[
            0
        ],
    ]
    async with app.state.database.engine.connect() as conn:
        for statement in statements:
            compiled = statement.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
            plan = " | ".join(
                row[3]
                for row in await conn.exec_driver_sql(
                    "EXPLAIN QUERY PLAN " + compiled.string, tuple(None for _ in compiled.positiontup or ())
                )
            )
            assert "ix_sessions_mentor_id_starts_at (mentor_id=? AND starts_at>? AND starts_at<?)" in plan
            assert (
                "ix_sessions_enterprise_id_starts_at (enterprise_id=? AND starts_at>? AND starts_at<?)"
                in plan
            )


async def test_a_session_with_the_longest_buffers_still_blocks_the_far_end_of_its_time(app, staff) -> None:
    ada = await create_mentor(
        staff,
        session_lengths_minutes=[60, 480],
        availability={
            "weekly": [{"weekday": day, "start": "00:00", "end": "24:00"} for day in range(7)],
            "buffer_before_minutes": 480,
            "buffer_after_minutes": 480,
            "slot_interval_minutes": 60,
        },
    )
    first = await book(staff, ada["id"], uuid.uuid4(), london(2027, 3, 29, 8), 480)
    assert first.status_code == 201, first.text
    # Occupied 00:00 on the 29th to 00:00 on the 30th; a session needs its own buffers too.
    # (28 March is the day the clocks go forward: 16:00 there is 15:00 UTC.)
    for refused in (london(2027, 3, 30, 7), london(2027, 3, 28, 16)):
        response = await book(staff, ada["id"], uuid.uuid4(), refused, 60)
        assert response.status_code == 409, response.text
    for accepted in (london(2027, 3, 30, 8), london(2027, 3, 28, 15)):  # touching, not overlapping
        response = await book(staff, ada["id"], uuid.uuid4(), accepted, 60)
        assert response.status_code == 201, response.text
