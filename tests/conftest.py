"""Fixtures and helpers of the whole-system tests (flows, faults, event contracts).

- ``system``: the whole system (``shared.testing.system``) once per session, shared by the
  flows and the event contracts; the fault tests boot their own with ``boot`` (they stop
  its parts). The periodic jobs run every fraction of a second so that their events come
  quickly (milestone expiry, session reminders, pipeline snapshots).
- ``mentoring_clock``: moves the mentoring service's clock forward, so that a session booked
  for later can be completed or missed now. The service runs from ``mentoring_app``: its own
  ``create_app(clock=...)`` seam, with the offset read from a file.
- ``demand_clock``: the same for the demand service's stale-lines job (``demand_app``), so that
  a line's expected tender date can pass.
"""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest
from fastapi import FastAPI
from nats.js.api import ConsumerConfig, DeliverPolicy

from shared.nats import read_stream
from shared.testing.databases import DatabaseFactory
from shared.testing.polling import wait_until
from shared.testing.system import System, running_system

CLOCK_FILE = "SEEDBED_TEST_CLOCK_FILE"
DEMAND_CLOCK_FILE = "SEEDBED_TEST_DEMAND_CLOCK_FILE"
FAST_JOBS = {
    "DEMAND_STALE_LINES_POLL_SECONDS": "0.3",
    "ENTERPRISES_EXPIRY_JOB_INTERVAL_SECONDS": "0.5",
    "MENTORING_REMINDER_INTERVAL_SECONDS": "0.3",
    "DEMAND_PIPELINE_POLL_SECONDS": "0.2",
    "DEMAND_PIPELINE_RELEASE_SECONDS": "0.2",
}


def mentoring_app() -> FastAPI:
    """The mentoring service, its clock ahead of real time by the seconds in $SEEDBED_TEST_CLOCK_FILE."""
    from services.mentoring.app import create_app

    path = Path(os.environ[CLOCK_FILE])

    def clock() -> datetime:
        text = path.read_text() if path.exists() else ""
        return datetime.now(UTC) + timedelta(seconds=float(text or 0))

    return create_app(clock=clock)


def demand_app() -> FastAPI:
    """The demand service, its stale-lines job's clock ahead of real time by the seconds in
    $SEEDBED_TEST_DEMAND_CLOCK_FILE."""
    from services.demand.app import create_app

    path = Path(os.environ[DEMAND_CLOCK_FILE])

    def clock() -> datetime:
        text = path.read_text() if path.exists() else ""
        return datetime.now(UTC) + timedelta(seconds=float(text or 0))

    return create_app(clock=clock)


@dataclass
class MentoringClock:
    path: Path

    def set(self, ahead: timedelta) -> None:
        """From now on, the mentoring service's "now" is real time plus ``ahead``."""
        scratch = self.path.with_suffix(".new")
        scratch.write_text(str(ahead.total_seconds()))
        scratch.replace(self.path)  # never half written when the service reads it

    def beside(self, name: str) -> MentoringClock:
        """The clock file of another service booted with this one (``demand-clock``)."""
        return MentoringClock(self.path.with_name(name))


@contextmanager
def boot(
    root: Path, databases: DatabaseFactory, extra_env: dict[str, str] | None = None
) -> Iterator[tuple[System, MentoringClock]]:
    clock = MentoringClock(root / "mentoring-clock")
    clock.set(timedelta(0))
    demand = clock.beside("demand-clock")
    demand.set(timedelta(0))
    env = FAST_JOBS | {CLOCK_FILE: str(clock.path), DEMAND_CLOCK_FILE: str(demand.path)} | (extra_env or {})
    apps = {"mentoring": "tests.conftest:mentoring_app", "demand": "tests.conftest:demand_app"}
    with running_system(root, databases, apps=apps, env=env) as system:
        yield system, clock


@pytest.fixture(scope="session")
def _booted(
    tmp_path_factory: pytest.TempPathFactory, _database_factory_sync: DatabaseFactory
) -> Iterator[tuple[System, MentoringClock]]:
    with boot(tmp_path_factory.mktemp("system"), _database_factory_sync) as booted:
        yield booted


@pytest.fixture(scope="session")
def system(_booted: tuple[System, MentoringClock]) -> System:
    return _booted[0]


@pytest.fixture
def mentoring_clock(_booted: tuple[System, MentoringClock]) -> Iterator[MentoringClock]:
    """The mentoring clock, set back to real time after the test."""
    yield _booted[1]
    _booted[1].set(timedelta(0))


@pytest.fixture
def demand_clock(_booted: tuple[System, MentoringClock]) -> Iterator[MentoringClock]:
    """The demand service's stale-lines clock, set back to real time after the test."""
    clock = _booted[1].beside("demand-clock")
    yield clock
    clock.set(timedelta(0))


# -- requests ---------------------------------------------------------------------------------

API = "/api/v1"


async def created(http: httpx.AsyncClient, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = await http.post(API + path, json=body)
    assert response.status_code == 201, f"POST {path} -> {response.status_code} {response.text}"
    return dict(response.json())


async def poll(
    request: Callable[[], Awaitable[httpx.Response]],
    until: Callable[[httpx.Response], Any],
    timeout: float = 15.0,
) -> httpx.Response:
    """Repeat ``request`` until ``until(response)`` holds; the answer that made it hold."""
    last: list[httpx.Response] = []

    async def holds() -> bool:
        last[:] = [await request()]
        return bool(until(last[0]))

    try:
        await wait_until(holds, timeout=timeout, interval=0.05)
    except AssertionError:
        got = f"{last[0].status_code} {last[0].text[:800]}" if last else "no answer"
        raise AssertionError(f"not so within {timeout}s; last answer: {got}") from None
    return last[0]


def ids(response: httpx.Response, key: str = "id") -> list[str]:
    assert response.status_code == 200, response.text
    return [str(item[key]) for item in response.json()["items"]]


def enterprise_body(name: str, **changes: Any) -> dict[str, Any]:
    return {
        "name": name,
        "legal_form": "cic_limited_by_guarantee",
        "postcode": "LS6 2QR",
        "cpv_codes": ["55300000"],
        "employees": 4,
        "turnover_pence": 25_000_000,
        "vcse": True,
        "works_with_public": True,  # so public liability insurance applies to it
        "stage": "incubating",
    } | changes


def line_body(anchor_id: str, title: str, **changes: Any) -> dict[str, Any]:
    return {
        "anchor_id": anchor_id,
        "title": title,
        "description": f"{title}: meals for schools across the city",
        "cpv_codes": ["55300000"],
        "estimated_value_pence": 12_000_000,
        "category": "services",
        "status": "planned",
        "visibility": "public",
        "expected_tender_date": "2027-05-01",
        "contract_start": "2027-09-01",
        "duration_months": 24,
        "suitable_for_sme": True,
        "suitable_for_vcse": True,
    } | changes


def mentor_body(name: str, expertise: list[str]) -> dict[str, Any]:
    return {
        "name": name,
        "email": f"{name.lower().replace(' ', '.')}@mentors.example",
        "organisation": "Leeds Anchor Network",
        "expertise": expertise,
        "timezone": "Europe/London",
        "session_lengths_minutes": [30, 60],
        "availability": {
            "timezone": "Europe/London",
            "weekly": [{"weekday": day, "start": "00:00", "end": "24:00"} for day in range(7)],
            "minimum_notice_minutes": 0,
        },
    }


async def free_slot(http: httpx.AsyncClient, mentor_id: str, after: timedelta, minutes: int = 60) -> str:
    """The first free start of the mentor at least ``after`` from now."""
    start = datetime.now(UTC) + after
    response = await http.get(
        f"{API}/mentors/{mentor_id}/slots",
        params={
            "start": start.isoformat(),
            "end": (start + timedelta(days=1)).isoformat(),
            "duration_minutes": minutes,
        },
    )
    assert response.status_code == 200, response.text
    return str(response.json()["items"][0]["start"])


async def book(
    http: httpx.AsyncClient, mentor_id: str, enterprise_id: str, after: timedelta, **extra: Any
) -> dict:
    body = {
        "mentor_id": mentor_id,
        "enterprise_id": enterprise_id,
        "start": await free_slot(http, mentor_id, after),
        "duration_minutes": 60,
        "topic": "Public liability insurance",
    } | extra
    return await created(http, "/sessions", body)


async def submit(
    http: httpx.AsyncClient, enterprise_id: str, code: str, value_pence: int | None = None, **extra: Any
) -> dict[str, Any]:
    body = {"status": "submitted", "evidence": {"reference": f"POL-{code[:6]}-1"}} | extra
    if value_pence is not None:
        body["value_pence"] = value_pence
    response = await http.patch(f"{API}/enterprises/{enterprise_id}/milestones/{code}", json=body)
    assert response.status_code == 200, response.text
    return dict(response.json())


# -- events -----------------------------------------------------------------------------------

STREAMS = ("ENTERPRISES", "DEMAND", "MENTORING")


@dataclass(frozen=True)
class Captured:
    """One message as it is stored in a service's stream."""

    stream: str
    sequence: int
    subject: str
    headers: dict[str, str]
    body: bytes

    @property
    def event(self) -> dict[str, Any]:
        return dict(json.loads(self.body))


async def stream_messages(nats_url: str, streams: tuple[str, ...] = STREAMS) -> list[Captured]:
    """Every message the services' streams hold, read straight off the system's nats-server."""
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        out = []
        for stream in streams:
            async for message in read_stream(js, stream, ConsumerConfig(deliver_policy=DeliverPolicy.ALL)):
                out.append(
                    Captured(
                        stream,
                        message.metadata.sequence.stream,
                        str(message.subject),
                        dict(message.headers or {}),
                        bytes(message.data or b""),
                    )
                )
        return out
    finally:
        await nc.close()
