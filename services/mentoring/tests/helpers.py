"""Helpers of the mentoring tests: a movable clock, principals, requests, and reading the stream."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import nats
import sqlalchemy as sa
from fastapi import FastAPI
from nats.js.api import ConsumerConfig, DeliverPolicy

from shared.principal import Principal

LONDON = ZoneInfo("Europe/London")
WEEKDAYS_NINE_TO_FIVE = [{"weekday": day, "start": "09:00", "end": "17:00"} for day in range(5)]


class Clock:
    """The app's ``now``, which the test sets and moves."""

    def __init__(self, now: datetime | None = None) -> None:
        self.now = now or datetime(2027, 3, 1, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


def london(year: int, month: int, day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=LONDON)


def enterprise(enterprise_id: uuid.UUID | str | None = None) -> Principal:
    return Principal(role="enterprise", subject_id=str(enterprise_id or uuid.uuid4()), actor="key-enterprise")


def mentor(mentor_id: uuid.UUID | str) -> Principal:
    return Principal(role="mentor", subject_id=str(mentor_id), actor="key-mentor")


ANCHOR = Principal(role="anchor", subject_id=str(uuid.uuid4()), actor="key-anchor")
INTEGRATOR = Principal(role="integrator", subject_id=None, actor="key-integrator")
PUBLIC = Principal(role="public", subject_id=None, actor="anonymous")


def mentor_body(**overrides: Any) -> dict[str, Any]:
    availability = {"weekly": WEEKDAYS_NINE_TO_FIVE, "minimum_notice_minutes": 0}
    availability |= overrides.pop("availability", {})
    return {
        "name": "Ada Mentor",
        "email": "ada@example.org",
        "organisation": "Leeds Teaching Hospitals",
        "expertise": ["insurance", "legal"],
        "timezone": "Europe/London",
        "session_lengths_minutes": [30, 60],
        "availability": availability,
    } | overrides


async def create_mentor(http: httpx.AsyncClient, **overrides: Any) -> dict[str, Any]:
    response = await http.post("/api/v1/mentors", json=mentor_body(**overrides))
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def book(
    http: httpx.AsyncClient,
    mentor_id: str,
    enterprise_id: uuid.UUID | str,
    start: datetime,
    minutes: int = 60,
    *,
    key: str | None = None,
    topic: str = "Public liability insurance",
    milestone_code: str | None = None,
) -> httpx.Response:
    body: dict[str, Any] = {
        "mentor_id": str(mentor_id),
        "enterprise_id": str(enterprise_id),
        "start": start.isoformat(),
        "duration_minutes": minutes,
        "topic": topic,
    }
    if milestone_code is not None:
        body["milestone_code"] = milestone_code
    headers = {"Idempotency-Key": key} if key else {}
    return await http.post("/api/v1/sessions", json=body, headers=headers)


def slot_starts(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [item["start"] for item in response.json()["items"]]


OVERLAPS = sa.text(
    """
    SELECT count(*) FROM sessions a JOIN sessions b ON a.id < b.id
    WHERE a.status = 'booked' AND b.status = 'booked' AND (
        (a.mentor_id = b.mentor_id AND a.blocked_from < b.blocked_until AND b.blocked_from < a.blocked_until)
        OR (a.enterprise_id = b.enterprise_id AND a.starts_at < b.ends_at AND b.starts_at < a.ends_at)
    )
    """
)


async def overlapping_booked_pairs(app: FastAPI) -> int:
    """Pairs of booked sessions sharing a mentor (buffers included) or an enterprise at one instant."""
    async with app.state.database.transaction(write=False) as session:
        return int(await session.scalar(OVERLAPS) or 0)


async def count_rows(app: FastAPI, statement: str, **params: Any) -> int:
    async with app.state.database.transaction(write=False) as session:
        return int(await session.scalar(sa.text(statement), params) or 0)


async def stream_events(
    nats_url: str, *, at_least: int, stream: str = "MENTORING", timeout: float = 10.0
) -> list[dict[str, Any]]:
    """Every CloudEvent stored in the stream, once it holds ``at_least`` messages (polled)."""
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        deadline = asyncio.get_running_loop().time() + timeout
        total = 0
        while True:
            try:
                total = (await js.stream_info(stream)).state.messages
            except Exception:
                total = 0
            if total >= at_least:
                break
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"stream {stream} holds {total} events, expected at least {at_least}")
            await asyncio.sleep(0.02)
        subscription = await js.pull_subscribe(
            "", durable=None, stream=stream, config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL)
        )
        found: list[dict[str, Any]] = []
        while len(found) < total:
            for message in await subscription.fetch(min(500, total - len(found)), timeout=5):
                found.append(json.loads(message.data))
                await message.ack()
        return found
    finally:
        await nc.close()
