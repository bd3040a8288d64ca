"""Fixtures of the mentoring service tests: a migrated database per test, the app running on it.

The app runs on a clock the test controls (fixed dates around the 2027 clock changes),
against the real nats-server and a real SQLite or PostgreSQL database.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import nats
import pytest
from fastapi import FastAPI
from nats.js.errors import ServerError

from services.mentoring.app import create_app
from services.mentoring.settings import MentoringSettings
from services.mentoring.tests.helpers import Clock
from shared.events import stream_for
from shared.nats import ensure_stream
from shared.principal import Principal
from shared.testing.apps import STAFF, TEST_SECRET, client, running
from shared.testing.databases import DatabaseFactory, alembic_prepare

SERVICE_DIR = Path(__file__).resolve().parent.parent


@pytest.fixture
async def database_url(db_backend: str, database_factory: DatabaseFactory) -> str:
    return await database_factory.create(db_backend, "mentoring", alembic_prepare(SERVICE_DIR))


@pytest.fixture
async def enterprises_stream_ready(nats_url: str) -> str:
    """The ENTERPRISES stream, as the enterprises service creates it in the running system
    (without it the ``mentoring-enterprises`` consumer retries its subscription all test long)."""
    nc = await nats.connect(nats_url)
    try:
        for attempt in range(20):
            try:
                await ensure_stream(nc.jetstream(), stream_for("enterprises"))
                break
            except ServerError:
                # Right after the reset deleted it, the server may still be removing its store.
                if attempt == 19:
                    raise
                await asyncio.sleep(0.05)
    finally:
        await nc.close()
    return nats_url


@pytest.fixture
def settings(database_url: str, enterprises_stream_ready: str) -> MentoringSettings:
    nats_url = enterprises_stream_ready
    return MentoringSettings(
        database_url=database_url,
        nats_url=nats_url,
        internal_secret=TEST_SECRET,
        environment="test",
        access_log=False,
    )


@pytest.fixture
def clock() -> Clock:
    """Monday 1 March 2027, 09:00 UTC, until a test moves it."""
    return Clock()


@pytest.fixture
async def app(settings: MentoringSettings, clock: Clock) -> AsyncIterator[FastAPI]:
    application = create_app(settings, clock=clock)
    async with running(application):
        yield application


@pytest.fixture
def as_principal(app: FastAPI) -> Callable[[Principal | None], httpx.AsyncClient]:
    """``async with as_principal(principal) as http:`` calls the app signed as that principal."""
    return lambda principal: client(app, principal)


@pytest.fixture
async def staff(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with client(app, STAFF) as http:
        yield http
