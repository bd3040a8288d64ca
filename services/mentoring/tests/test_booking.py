"""Booking: only into a free slot, never two overlapping sessions for a mentor or an enterprise,
limits and capacity, idempotent retries, and the SQLite write lock taken before the check."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy import event

from services.mentoring.tests.helpers import (
    ANCHOR,
    INTEGRATOR,
    book,
    count_rows,
    create_mentor,
    enterprise,
    london,
    mentor,
    overlapping_booked_pairs,
    stream_events,
)
from shared.db import utcnow
from shared.idempotency import idempotency_table
from shared.testing.databases import sqlite_write_lock_held


async def test_a_free_slot_is_booked_and_announced(app, staff: httpx.AsyncClient, nats_url: str) -> None:
    ada = await create_mentor(staff)
    firm = uuid.uuid4()
    response = await book(
        staff, ada["id"], firm, london(2027, 3, 29, 10), milestone_code="public_liability_insurance"
    )
    assert response.status_code == 201, response.text
    session = response.json()
    assert response.headers["location"] == f"/api/v1/sessions/{session['id']}"
    assert response.headers["etag"] == '"0"'
    assert session["start"] == "2027-03-29T10:00:00+01:00" and session["end"] == "2027-03-29T11:00:00+01:00"
    assert session["status"] == "booked" and session["sequence"] == 0
    assert session["milestone_code"] == "public_liability_insurance"
    assert (await staff.get(f"/api/v1/sessions/{session['id']}")).json() == session
    events = await stream_events(nats_url, at_least=2)
    booked = [e for e in events if e["type"] == "mentoring.session.booked.v1"]
    assert len(booked) == 1 and booked[0]["subject"] == session["id"]
    assert booked[0]["data"] == {
        "session_id": session["id"],
        "sequence": 0,
        "mentor_id": ada["id"],
        "enterprise_id": str(firm),
        "start": "2027-03-29T09:00:00Z",
        "end": "2027-03-29T10:00:00Z",
        "timezone": "Europe/London",
        "topic": "Public liability insurance",
        "status": "booked",
        "milestone_code": "public_liability_insurance",
    }


async def test_a_taken_slot_is_refused_with_409_naming_the_session_in_the_way(
    staff: httpx.AsyncClient,
) -> None:
    ada = await create_mentor(staff)
    first = (await book(staff, ada["id"], uuid.uuid4(), london(2027, 3, 29, 10))).json()
    response = await book(staff, ada["id"], uuid.uuid4(), london(2027, 3, 29, 10, 30))
    assert response.status_code == 409
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"].endswith("/slot-taken")
    assert problem["conflict"] == {
        "party": "mentor",
        "mentor_id": ada["id"],
        "session_id": first["id"],
        "start": "2027-03-29T10:00:00+01:00",
        "end": "2027-03-29T11:00:00+01:00",
    }
    assert first["id"] in problem["detail"]


async def test_an_enterprise_cannot_be_in_two_sessions_at_once_even_with_two_mentors(staff) -> None:
    ada = await create_mentor(staff)
    bob = await create_mentor(staff, name="Bob", email="bob@example.org")
    firm = uuid.uuid4()
    first = (await book(staff, ada["id"], firm, london(2027, 3, 29, 10))).json()
    response = await book(staff, bob["id"], firm, london(2027, 3, 29, 10, 30), 30)
    assert response.status_code == 409
    assert response.json()["conflict"]["party"] == "enterprise"
    assert response.json()["conflict"]["enterprise_id"] == str(firm)
    assert response.json()["conflict"]["session_id"] == first["id"]
    assert (
        await book(staff, bob["id"], firm, london(2027, 3, 29, 11), 30)
    ).status_code == 201  # back to back


async def test_buffers_between_a_mentors_sessions_are_kept(staff: httpx.AsyncClient) -> None:
    ada = await create_mentor(
        staff,
        availability={"buffer_before_minutes": 15, "buffer_after_minutes": 15, "slot_interval_minutes": 15},
    )
    assert (await book(staff, ada["id"], uuid.uuid4(), london(2027, 3, 29, 10))).status_code == 201
    too_close = await book(staff, ada["id"], uuid.uuid4(), london(2027, 3, 29, 11, 15))
    assert too_close.status_code == 409 and too_close.json()["conflict"]["party"] == "mentor"
    assert (await book(staff, ada["id"], uuid.uuid4(), london(2027, 3, 29, 11, 30))).status_code == 201


async def test_a_start_outside_the_slots_is_refused_naming_start(
    app, staff: httpx.AsyncClient, clock
) -> None:
    ada = await create_mentor(staff, availability={"minimum_notice_minutes": 24 * 60})
    cases = [
        (london(2027, 3, 28, 10), "outside their availability"),  # a Sunday
        (london(2027, 3, 29, 10, 10), "30-minute steps"),  # off the half-hour steps
        (london(2027, 3, 29, 16, 30), "outside their availability"),  # would end at 17:30
        (london(2027, 3, 1, 15), "1440 minutes' notice"),  # now is 09:00 UTC on 1 March
        (london(2027, 12, 1, 10), "180 days ahead"),
    ]
    for start, message in cases:
        response = await book(staff, ada["id"], uuid.uuid4(), start)
        assert response.status_code == 422, (start, response.text)
        assert response.json()["errors"][0]["field"] == "start"
        assert message in response.json()["errors"][0]["message"], response.json()
    wrong_length = await book(staff, ada["id"], uuid.uuid4(), london(2027, 3, 29, 10), 45)
    assert wrong_length.json()["errors"] == [
        {"field": "duration_minutes", "message": "this mentor offers sessions of 30, 60 minutes"}
    ]
    no_mentor = await book(staff, str(uuid.uuid4()), uuid.uuid4(), london(2027, 3, 29, 10))
    assert no_mentor.status_code == 422 and no_mentor.json()["errors"][0]["field"] == "mentor_id"
    naive = await staff.post(
        "/api/v1/sessions",
        json={
            "mentor_id": ada["id"],
            "enterprise_id": str(uuid.uuid4()),
            "start": "2027-03-29T10:00:00",
            "duration_minutes": 60,
            "topic": "x",
        },
    )
    assert naive.status_code == 422 and naive.json()["errors"][0]["field"] == "start"
    assert await count_rows(app, "SELECT count(*) FROM sessions") == 0


async def test_daily_and_weekly_limits_refuse_with_409(staff: httpx.AsyncClient) -> None:
    ada = await create_mentor(staff, max_sessions_per_week=3, availability={"max_sessions_per_day": 2})
    assert (await book(staff, ada["id"], uuid.uuid4(), london(2027, 3, 29, 9))).status_code == 201
    assert (await book(staff, ada["id"], uuid.uuid4(), london(2027, 3, 29, 11))).status_code == 201
    day_full = await book(staff, ada["id"], uuid.uuid4(), london(2027, 3, 29, 14))
    assert day_full.status_code == 409 and day_full.json()["type"].endswith("/day-full")
    assert (await book(staff, ada["id"], uuid.uuid4(), london(2027, 3, 30, 9))).status_code == 201
    week_full = await book(staff, ada["id"], uuid.uuid4(), london(2027, 4, 2, 9))
    assert week_full.status_code == 409 and week_full.json()["type"].endswith("/week-full")
    assert (await book(staff, ada["id"], uuid.uuid4(), london(2027, 4, 5, 9))).status_code == 201


async def test_a_mentor_at_mentee_capacity_takes_no_new_enterprise_but_keeps_seeing_their_own(staff) -> None:
    ada = await create_mentor(staff, max_active_mentees=2)
    first, second = uuid.uuid4(), uuid.uuid4()
    assert (await book(staff, ada["id"], first, london(2027, 3, 29, 9))).status_code == 201
    assert (await book(staff, ada["id"], second, london(2027, 3, 29, 10))).status_code == 201
    third = await book(staff, ada["id"], uuid.uuid4(), london(2027, 3, 29, 11))
    assert third.status_code == 409 and third.json()["type"].endswith("/mentor-at-capacity")
    assert (await book(staff, ada["id"], first, london(2027, 3, 30, 9))).status_code == 201


async def test_the_same_idempotency_key_books_once_and_a_different_body_is_refused(
    app, staff: httpx.AsyncClient, nats_url: str
) -> None:
    ada = await create_mentor(staff)
    firm = uuid.uuid4()
    first = await book(staff, ada["id"], firm, london(2027, 3, 29, 10), key="book-29-march")
    again = await book(staff, ada["id"], firm, london(2027, 3, 29, 10), key="book-29-march")
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert again.headers["location"] == first.headers["location"]
    different = await book(staff, ada["id"], firm, london(2027, 3, 29, 14), key="book-29-march")
    assert different.status_code == 422
    assert different.json()["errors"][0]["field"] == "Idempotency-Key"
    assert await count_rows(app, "SELECT count(*) FROM sessions") == 1
    events = await stream_events(nats_url, at_least=2)
    assert [e["type"] for e in events].count("mentoring.session.booked.v1") == 1


async def test_an_expired_idempotency_key_is_used_again_and_a_fresh_one_held_elsewhere_is_not(
    app, staff: httpx.AsyncClient
) -> None:
    ada = await create_mentor(staff)
    first = await book(staff, ada["id"], uuid.uuid4(), london(2027, 3, 29, 10), key="old-key")
    assert first.status_code == 201
    # 25 hours later (keys last 24 hours) the key books anew, with another body.
    async with app.state.database.transaction() as session:
        await session.execute(sa.update(idempotency_table).values(created_at=utcnow() - timedelta(hours=25)))
    again = await book(staff, ada["id"], uuid.uuid4(), london(2027, 3, 29, 14), key="old-key")
    assert again.status_code == 201 and "idempotent-replayed" not in again.headers
    assert again.json()["id"] != first.json()["id"]
    replayed = await book(staff, ada["id"], uuid.uuid4(), london(2027, 3, 29, 14), key="old-key")
    assert replayed.status_code == 422  # fresh again: a different body is refused
    assert await count_rows(app, "SELECT count(*) FROM sessions") == 2
    assert await count_rows(app, "SELECT count(*) FROM idempotency_keys") == 1


async def test_who_may_book(as_principal, staff: httpx.AsyncClient) -> None:
    ada = await create_mentor(staff)
    firm = uuid.uuid4()
    async with as_principal(enterprise(firm)) as http:
        assert (await book(http, ada["id"], firm, london(2027, 3, 29, 9))).status_code == 201
        assert (await book(http, ada["id"], uuid.uuid4(), london(2027, 3, 29, 10))).status_code == 403
    async with as_principal(mentor(ada["id"])) as http:
        assert (await book(http, ada["id"], uuid.uuid4(), london(2027, 3, 29, 11))).status_code == 201
    async with as_principal(mentor(uuid.uuid4())) as http:
        assert (await book(http, ada["id"], uuid.uuid4(), london(2027, 3, 29, 12))).status_code == 403
    for principal in (ANCHOR, INTEGRATOR):
        async with as_principal(principal) as http:
            assert (await book(http, ada["id"], uuid.uuid4(), london(2027, 3, 29, 13))).status_code == 403


@pytest.mark.parametrize("db_backend", ["sqlite"], indirect=True)
async def test_on_sqlite_the_booking_takes_the_write_lock_before_it_checks_the_slot(app, staff) -> None:
    ada = await create_mentor(staff)

    def write_lock_held() -> bool:
        return sqlite_write_lock_held(app.state.database.url)

    statements: list[tuple[int, str, bool]] = []

    def record(conn, cursor, statement, parameters, context, executemany) -> None:
        statement = " ".join(statement.split())
        locked = statement.startswith("SELECT") and write_lock_held()
        statements.append((id(conn.connection.dbapi_connection), statement, locked))

    # The probe works: the lock comes free (the outbox relay writes briefly after each event).
    for _ in range(500):
        if not write_lock_held():
            break
        await asyncio.sleep(0.01)
    else:
        raise AssertionError("SQLite's write lock never came free")
    engine = app.state.database.engine.sync_engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        response = await book(staff, ada["id"], uuid.uuid4(), london(2027, 3, 29, 10), key="lock-check")
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert response.status_code == 201, response.text
    insert_at = next(i for i, (_, s, _) in enumerate(statements) if s.startswith("INSERT INTO sessions"))
    connection = statements[insert_at][0]
    reads = [
        (s, locked) for c, s, locked in statements[:insert_at] if c == connection and s.startswith("SELECT")
    ]
    # Every read that decides the booking (the idempotency key, the mentor, the sessions in the
    # way) ran while the request's transaction held the write lock (taken at BEGIN IMMEDIATE).
    assert reads and all(locked for _, locked in reads)
    assert any("FROM idempotency_keys" in s for s, _ in reads)
    assert any("FROM mentors" in s for s, _ in reads)
    # The sessions in the way: the mentor's and the enterprise's.
    assert any("FROM sessions" in s and "enterprise_id" in s and "mentor_id" in s for s, _ in reads)
    assert await overlapping_booked_pairs(app) == 0


async def test_a_keyed_booking_of_an_unknown_mentor_is_refused_and_its_key_still_replays(
    staff: httpx.AsyncClient,
) -> None:
    ada = await create_mentor(staff)
    firm = uuid.uuid4()
    unknown = await book(staff, str(uuid.uuid4()), firm, london(2027, 3, 29, 10), key="k-unknown")
    assert unknown.status_code == 422 and unknown.json()["errors"][0]["field"] == "mentor_id"
    first = await book(staff, ada["id"], firm, london(2027, 3, 29, 10), key="k-known")
    assert first.status_code == 201
    # The key was used for a booking of Ada: a request naming an unknown mentor under it is
    # told so (the key is checked even when no mentor row carries its fingerprint).
    reused = await book(staff, str(uuid.uuid4()), firm, london(2027, 3, 29, 10), key="k-known")
    assert reused.status_code == 422 and reused.json()["errors"][0]["field"] == "Idempotency-Key"
