"""Fifty simultaneous booking requests through the app, on SQLite and on PostgreSQL: exactly one
succeeds in each set of conflicting requests, the others get 409, and no two booked sessions
of a mentor (buffers included) or of an enterprise overlap in the table afterwards."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from datetime import datetime

import httpx

from services.mentoring.tests.helpers import book, count_rows, create_mentor, london, overlapping_booked_pairs

REQUESTS = 50


async def _race(
    http: httpx.AsyncClient, attempts: list[tuple[str, uuid.UUID, datetime, int]]
) -> list[httpx.Response]:
    return await asyncio.gather(
        *(book(http, mentor_id, firm, start, minutes) for mentor_id, firm, start, minutes in attempts)
    )


def _outcomes(responses: list[httpx.Response]) -> Counter[int]:
    for response in responses:
        assert response.status_code in (201, 409), response.text
        if response.status_code == 409:
            assert response.headers["content-type"] == "application/problem+json"
            assert response.json()["conflict"]["session_id"], response.json()
    return Counter(response.status_code for response in responses)


async def test_fifty_enterprises_racing_for_one_slot_book_it_once(app, staff: httpx.AsyncClient) -> None:
    ada = await create_mentor(staff)
    start = london(2027, 3, 29, 10)
    responses = await _race(staff, [(ada["id"], uuid.uuid4(), start, 60) for _ in range(REQUESTS)])
    assert _outcomes(responses) == {201: 1, 409: REQUESTS - 1}
    winner = next(r.json() for r in responses if r.status_code == 201)
    assert {r.json()["conflict"]["session_id"] for r in responses if r.status_code == 409} == {winner["id"]}
    assert {r.json()["conflict"]["party"] for r in responses if r.status_code == 409} == {"mentor"}
    assert await count_rows(app, "SELECT count(*) FROM sessions WHERE status = 'booked'") == 1
    assert await overlapping_booked_pairs(app) == 0


async def test_fifty_requests_for_mutually_overlapping_slots_with_buffers_book_one(app, staff) -> None:
    ada = await create_mentor(
        staff,
        availability={"slot_interval_minutes": 15, "buffer_before_minutes": 10, "buffer_after_minutes": 10},
    )
    # 10:00, 10:15, 10:30 and 10:45, for 30 or 60 minutes: with ten-minute buffers, every pair collides.
    attempts = [
        (ada["id"], uuid.uuid4(), london(2027, 3, 29, 10, 15 * (n % 4)), 60 if (n // 4) % 2 else 30)
        for n in range(REQUESTS)
    ]
    responses = await _race(staff, attempts)
    assert _outcomes(responses) == {201: 1, 409: REQUESTS - 1}
    assert await overlapping_booked_pairs(app) == 0


async def test_fifty_requests_over_five_separate_slots_book_each_slot_once(app, staff) -> None:
    ada = await create_mentor(staff)
    slots = [london(2027, 3, 29, hour) for hour in (9, 10, 11, 13, 15)]
    responses = await _race(staff, [(ada["id"], uuid.uuid4(), slots[n % 5], 60) for n in range(REQUESTS)])
    assert _outcomes(responses) == {201: 5, 409: REQUESTS - 5}
    won = sorted(r.json()["start"] for r in responses if r.status_code == 201)
    assert won == sorted(s.isoformat() for s in slots)
    assert await overlapping_booked_pairs(app) == 0


async def test_one_enterprise_racing_across_two_mentors_is_booked_once(app, staff: httpx.AsyncClient) -> None:
    ada = await create_mentor(staff)
    bob = await create_mentor(staff, name="Bob", email="bob@example.org")
    firm = uuid.uuid4()
    attempts = [
        ((ada, bob)[n % 2]["id"], firm, london(2027, 3, 29, 10, 30 * ((n // 2) % 2)), 60)
        for n in range(REQUESTS)
    ]
    responses = await _race(staff, attempts)
    assert _outcomes(responses) == {201: 1, 409: REQUESTS - 1}
    parties = Counter(r.json()["conflict"]["party"] for r in responses if r.status_code == 409)
    assert parties["enterprise"] >= 1  # the other mentor was free: only the enterprise stood in the way
    assert await count_rows(app, "SELECT count(*) FROM sessions WHERE status = 'booked'") == 1
    assert await overlapping_booked_pairs(app) == 0
