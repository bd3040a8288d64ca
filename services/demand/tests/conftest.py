"""Fixtures of the demand service tests: a migrated database per test, the app running on it."""

from __future__ import annotations

import ast
import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from services.demand import read_models
from services.demand.app import create_app
from services.demand.pipeline import release
from services.demand.settings import DemandSettings
from shared.principal import Principal
from shared.testing.apps import STAFF, TEST_SECRET, client, running
from shared.testing.databases import DatabaseFactory, alembic_prepare

SERVICE_DIR = Path(__file__).resolve().parent.parent
REPO_ROOT = SERVICE_DIR.parent.parent
ENTERPRISES_CATALOGUE_MIGRATION = (
    REPO_ROOT / "services/enterprises/migrations/versions/20261125_default_milestone_catalogue_ent0003.py"
)


def seeded_catalogue() -> list[tuple[str, str, str]]:
    """(code, name, category) of the built-in milestone catalogue, read as data from the
    enterprises service's seeding migration (a service never imports another)."""
    tree = ast.parse(ENTERPRISES_CATALOGUE_MIGRATION.read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "CATALOGUE" for t in node.targets):
            assert isinstance(node.value, ast.List)
            return [
                tuple(ast.literal_eval(part) for part in entry.elts[:3])  # type: ignore[misc]
                for entry in node.value.elts
                if isinstance(entry, ast.Tuple)
            ]
    raise AssertionError("no CATALOGUE in the enterprises catalogue migration")


SEEDED_CATALOGUE = seeded_catalogue()


async def feed_catalogue(
    application: FastAPI, entries: list[tuple[str, str, str]] = SEEDED_CATALOGUE
) -> None:
    """Store catalogue entries in the demand service's copy as the ``demand-catalogue`` consumer
    does when the enterprises service announces them (version 1, as seeded)."""
    async with application.state.database.transaction() as session:
        for code, name, category in entries:
            await read_models.store_milestone_definition(
                session, {"code": code, "version": 1, "name": name, "category": category}
            )


@pytest.fixture
async def database_url(db_backend: str, database_factory: DatabaseFactory) -> str:
    return await database_factory.create(db_backend, "demand", alembic_prepare(SERVICE_DIR))


@pytest.fixture
def settings(database_url: str, nats_url: str) -> DemandSettings:
    return DemandSettings(
        database_url=database_url,
        nats_url=nats_url,
        internal_secret=TEST_SECRET,
        environment="test",
        access_log=False,
        # Tests publish snapshots themselves (refresh), except the test of the job.
        pipeline_publisher=False,
        # Tests run the stale-lines job themselves, with the day they choose.
        stale_lines_job=False,
    )


async def _cancel_background_tasks(application: FastAPI) -> None:
    """Stop the consumers (each finishes the batch it is applying) and cancel the job tasks
    until they are really done.

    Python 3.11's ``asyncio.wait_for`` (gh-86296) and nats-py's flush can swallow a
    cancellation; cancelling again until the task ends keeps teardown bounded.
    """
    runtime = application.state.runtime
    for consumer in runtime.consumers:
        await consumer.stop()
    for task in runtime._job_tasks:
        while task is not None and not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=0.5)


@asynccontextmanager
async def serving(application: FastAPI) -> AsyncIterator[FastAPI]:
    """The app's lifespan around a block, with a teardown that cannot hang."""
    context = running(application)
    await context.__aenter__()
    try:
        yield application
    finally:
        await _cancel_background_tasks(application)
        await context.__aexit__(None, None, None)


@pytest.fixture
async def app(settings: DemandSettings) -> AsyncIterator[FastAPI]:
    """The service running, its copy of the milestone catalogue holding the built-in catalogue
    (as once the enterprises service has announced it)."""
    async with serving(create_app(settings)) as application:
        await feed_catalogue(application)
        yield application


@pytest.fixture
def as_principal(app: FastAPI) -> Callable[[Principal | None], httpx.AsyncClient]:
    """``async with as_principal(principal) as http:`` calls the app signed as that principal."""
    return lambda principal: client(app, principal)


def anchor_principal(anchor_id: str) -> Principal:
    return Principal(role="anchor", subject_id=anchor_id, actor=f"key-{anchor_id[:8]}")


def enterprise_principal(enterprise_id: str) -> Principal:
    return Principal(role="enterprise", subject_id=enterprise_id, actor=f"key-{enterprise_id[:8]}")


MENTOR = Principal(role="mentor", subject_id=str(uuid.uuid4()), actor="mentor-key")
INTEGRATOR = Principal(role="integrator", subject_id=None, actor="integrator-key")
PUBLIC = Principal(role="public", subject_id=None, actor="calendar-feed")


def line_body(**overrides: Any) -> dict[str, Any]:
    """A valid demand line; ``overrides`` replace fields (None removes one)."""
    body: dict[str, Any] = {
        "title": "Community catering for day centres",
        "description": "Hot meals for four day centres.",
        "cpv_codes": ["55520000-1"],
        "estimated_value_pence": 48_000_000,
        "category": "services",
        "expected_tender_date": "2027-02-01",
        "contract_start": "2027-06-01",
        "duration_months": 36,
        "suitable_for_sme": True,
        "suitable_for_vcse": True,
        "requirements": [{"code": "public_liability_insurance", "min_value_pence": 500_000_000}],
        "social_value_priorities": ["local_employment"],
        "delivery_area": {"label": "Leeds", "postcode_areas": ["LS"]},
    }
    for key, value in overrides.items():
        if value is None:
            body.pop(key, None)
        else:
            body[key] = value
    return body


@pytest.fixture
def staff_http(app: FastAPI) -> httpx.AsyncClient:
    return client(app, STAFF)


@pytest.fixture
def new_anchor(app: FastAPI) -> Callable[..., Awaitable[dict[str, Any]]]:
    async def create(name: str | None = None, type: str = "local_authority") -> dict[str, Any]:
        async with client(app, STAFF) as http:
            response = await http.post(
                "/api/v1/anchors", json={"name": name or f"Anchor {uuid.uuid4().hex[:6]}", "type": type}
            )
        assert response.status_code == 201, response.text
        return response.json()

    return create


@pytest.fixture
def refresh(app: FastAPI, settings: DemandSettings) -> Callable[[], Awaitable[int | None]]:
    """Release the pipeline now, the confidential part too (as when its cadence is due)."""

    async def run() -> int | None:
        return await release.publish_snapshot(app.state.database, settings, force=True)

    return run


async def outbox_events(app: FastAPI, type_prefix: str = "demand.") -> list[dict[str, Any]]:
    """Every event the service recorded in its outbox (sent or not), oldest first."""
    import json

    import sqlalchemy as sa

    from shared.outbox import outbox_table

    async with app.state.database.transaction(write=False) as session:
        rows = (
            await session.execute(
                sa.select(outbox_table.c.subject, outbox_table.c.body).order_by(outbox_table.c.position)
            )
        ).all()
    return [json.loads(row.body) for row in rows if row.subject.startswith(type_prefix)]
