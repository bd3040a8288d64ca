"""Fixtures of the enterprises service tests: a migrated database per test, the app running on it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from services.enterprises.app import create_app
from services.enterprises.settings import EnterprisesSettings
from shared.principal import Principal
from shared.testing.apps import TEST_SECRET, client, running
from shared.testing.databases import DatabaseFactory, alembic_prepare

SERVICE_DIR = Path(__file__).resolve().parent.parent


@pytest.fixture
async def database_url(db_backend: str, database_factory: DatabaseFactory) -> str:
    return await database_factory.create(db_backend, "enterprises", alembic_prepare(SERVICE_DIR))


@pytest.fixture
def settings(database_url: str, nats_url: str) -> EnterprisesSettings:
    return EnterprisesSettings(
        database_url=database_url,
        nats_url=nats_url,
        internal_secret=TEST_SECRET,
        environment="test",
        access_log=False,
    )


@pytest.fixture
async def app(settings: EnterprisesSettings) -> AsyncIterator[FastAPI]:
    application = create_app(settings)
    async with running(application):
        yield application


@pytest.fixture
def as_principal(app: FastAPI) -> Callable[[Principal | None], httpx.AsyncClient]:
    """``async with as_principal(principal) as http:`` calls the app signed as that principal."""
    return lambda principal: client(app, principal)
