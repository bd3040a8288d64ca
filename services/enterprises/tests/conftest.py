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
from services.enterprises.consumers import on_demand_item
from services.enterprises.settings import EnterprisesSettings
from shared.events import new_event
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


# --- demand lines, awards and bids -----------------------------------------------------------


def public_line(
    demand_id: str,
    version: int = 1,
    *,
    anchor_id: str | None = None,
    requirements: list[dict[str, Any]] | None = None,
    status: str = "planned",
) -> dict[str, Any]:
    """A public demand line exactly as ``demand.item.published.v1`` carries it."""
    return {
        "demand_id": demand_id,
        "version": version,
        "anchor_id": anchor_id or str(uuid.uuid4()),
        "anchor_type": "local_authority",
        "title": "School meals, north Leeds",
        "description": "Hot school meals for eleven primary schools.",
        "cpv_codes": ["55524000-9"],
        "estimated_value_pence": 48_000_000,
        "min_value_pence": None,
        "max_value_pence": None,
        "category": "services",
        "expected_tender_date": "2027-06-01",
        "contract_start": "2027-09-01",
        "duration_months": 24,
        "lots": [],
        "suitable_for_sme": True,
        "suitable_for_vcse": True,
        "status": status,
        "requirements": requirements
        if requirements is not None
        else [{"code": "public_liability_insurance", "min_value_pence": 500_000_000}],
        "social_value_priorities": ["local employment"],
        "delivery_area": {"label": "North Leeds", "postcode_areas": ["LS"], "postcode_districts": ["LS17"]},
        "external_ref": None,
    }


def award(
    demand_id: str,
    version: int,
    *,
    anchor_id: str,
    enterprise_id: str | None = None,
    registration_number: str | None = None,
    supplier_name: str = "Green Clean Leeds CIC",
    value_pence: int = 45_000_000,
) -> dict[str, Any]:
    """``demand.item.awarded.v1`` as the demand service sends it."""
    return {
        "demand_id": demand_id,
        "version": version,
        "anchor_id": anchor_id,
        "status": "awarded",
        "supplier_name": supplier_name,
        "supplier_registration_number": registration_number,
        "enterprise_id": enterprise_id,
        "contract_value_pence": value_pence,
        "awarded_on": "2027-07-15",
    }


async def deliver(app: FastAPI, type_: str, data: dict[str, Any], *, time: Any = None) -> None:
    """Hand a demand event to the ``enterprises-demand`` handler in a transaction of its own, as
    its consumer does (the tests that need NATS itself publish there)."""
    event = new_event(type_, data, source="/seedbed/demand", subject=data["demand_id"], time=time)
    async with app.state.database.transaction() as session:
        await on_demand_item(session, event)


async def create_bid(
    http: httpx.AsyncClient, enterprise_id: str, demand_id: str, **body: Any
) -> dict[str, Any]:
    response = await http.post(
        f"/api/v1/enterprises/{enterprise_id}/bids", json={"demand_id": demand_id, **body}
    )
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]
