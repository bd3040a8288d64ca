"""Fixtures of the enterprises service tests: a migrated database per test, the app running on it."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI

from services.enterprises.app import create_app
from services.enterprises.settings import EnterprisesSettings
from shared.outbox import outbox_table
from shared.principal import Principal
from shared.testing.apps import STAFF, TEST_SECRET, client, running
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
        run_jobs=False,  # tests run the jobs themselves, at the times they choose
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


# --- helpers of the enterprises tests --------------------------------------------------------

STAFF_2 = Principal(role="staff", subject_id=None, actor="second-staff-member")
ANCHOR = Principal(role="anchor", subject_id=str(uuid.uuid4()), actor="anchor-key")
INTEGRATOR = Principal(role="integrator", subject_id=None, actor="integrator-key")
MENTOR = Principal(role="mentor", subject_id=str(uuid.uuid4()), actor="mentor-key")


def enterprise_principal(enterprise_id: str) -> Principal:
    return Principal(role="enterprise", subject_id=str(enterprise_id), actor=f"key-of-{enterprise_id}")


def enterprise_body(**overrides: Any) -> dict[str, Any]:
    """A valid POST /enterprises body (a small CIC in Leeds that cleans offices)."""
    body: dict[str, Any] = {
        "name": "Green Clean Leeds CIC",
        "legal_form": "cic_limited_by_guarantee",
        "registration_number": f"{uuid.uuid4().int % 10**8:08d}",
        "postcode": "ls6 2qr",
        "cpv_codes": ["90910000-9"],
        "max_contract_value_pence": 25_000_000,
        "employees": 3,
        "turnover_pence": 18_000_000,
        "vcse": True,
    }
    body.update(overrides)
    return body


@pytest.fixture
def staff(app: FastAPI) -> httpx.AsyncClient:
    return client(app, STAFF)


CATALOGUE_EVENT = "enterprises.milestone_definition.published.v1"


async def outbox_events(app: FastAPI, *, catalogue: bool = False) -> list[dict[str, Any]]:
    """Every event this service has recorded in its outbox, oldest first (as CloudEvents dicts).

    The catalogue's announcements (the migration records one per built-in definition) are left
    out unless ``catalogue``: the tests of enterprises and milestones count their own events."""
    async with app.state.database.transaction(write=False) as session:
        bodies = (
            await session.scalars(sa.select(outbox_table.c.body).order_by(outbox_table.c.position))
        ).all()
    events = [json.loads(body) for body in bodies]
    return [e for e in events if catalogue or e["type"] != CATALOGUE_EVENT]


async def outbox_count(app: FastAPI) -> int:
    return len(await outbox_events(app))


async def create_enterprise(http: httpx.AsyncClient, **overrides: Any) -> dict[str, Any]:
    response = await http.post("/api/v1/enterprises", json=enterprise_body(**overrides))
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]
