"""The expiry job: warns once, expires once, whoever runs it and however often."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from fastapi import FastAPI

from services.enterprises.app import create_app
from services.enterprises.jobs import run_expiry
from services.enterprises.settings import EnterprisesSettings
from services.enterprises.tests.conftest import (
    create_enterprise,
    enterprise_principal,
    outbox_events,
)
from shared.db import Database
from shared.testing.apps import STAFF, client, running
from shared.testing.polling import wait_until

CODES = ("cyber_essentials", "case_studies")


async def verified_until(app: FastAPI, enterprise_id: str, code: str, expires_at: datetime) -> None:
    url = f"/api/v1/enterprises/{enterprise_id}/milestones/{code}"
    async with client(app, enterprise_principal(enterprise_id)) as own:
        submitted = await own.patch(
            url,
            json={
                "status": "submitted",
                "evidence": {"reference": "CE-1"},
                "expires_at": expires_at.isoformat(),
            },
        )
        assert submitted.status_code == 200, submitted.text
    async with client(app, STAFF) as staff:
        verified = await staff.patch(url, json={"status": "verified"})
        assert verified.status_code == 200, verified.text


def counts(events: list[dict], type_: str) -> Counter[str]:
    return Counter(e["subject"] for e in events if e["type"] == type_)


async def test_two_replicas_running_the_job_at_once_warn_and_expire_each_milestone_once(
    app: FastAPI, staff: httpx.AsyncClient, database_url: str
) -> None:
    now = datetime.now(UTC)
    expiring = now + timedelta(days=10)
    subjects = []
    for _ in range(5):
        enterprise = await create_enterprise(staff)
        for code in CODES:
            await verified_until(app, enterprise["id"], code, expiring)
            subjects.append(f"{enterprise['id']}/{code}")
    warning = timedelta(days=30)
    replicas = [app.state.database, Database(database_url, pool_size=4)]
    try:
        runs = await asyncio.gather(
            *(run_expiry(db, warning=warning, batch=3, now=now) for db in replicas),
            *(run_expiry(db, warning=warning, batch=4, now=now) for db in replicas),
        )
        assert sum(r.warned for r in runs) == len(subjects)
        later = now + timedelta(days=11)
        runs = await asyncio.gather(
            *(run_expiry(db, warning=warning, batch=3, now=later) for db in replicas * 2)
        )
        assert sum(r.expired for r in runs) == len(subjects)
        # After a restart (a new process, the same database) nothing is sent again.
        again = await run_expiry(Database(database_url, pool_size=2), warning=warning, now=later)
        assert (again.warned, again.expired) == (0, 0)
    finally:
        await replicas[1].dispose()
    events = await outbox_events(app)
    assert counts(events, "enterprises.milestone.expiring.v1") == Counter(dict.fromkeys(subjects, 1))
    assert counts(events, "enterprises.milestone.expired.v1") == Counter(dict.fromkeys(subjects, 1))
    for e in events:
        if e["type"] in ("enterprises.milestone.expiring.v1", "enterprises.milestone.expired.v1"):
            assert e["data"]["actor_role"] == "system"
    # Versions keep growing per milestone: verified (2), warned (3), expired (4).
    expired = [e for e in events if e["type"] == "enterprises.milestone.expired.v1"]
    assert {e["data"]["version"] for e in expired} == {4}
    assert {e["data"]["status"] for e in expired} == {"expired"}


async def test_expiry_makes_the_milestone_missing_and_announces_readiness(
    app: FastAPI, staff: httpx.AsyncClient
) -> None:
    now = datetime.now(UTC)
    enterprise = await create_enterprise(staff)
    eid = enterprise["id"]
    await verified_until(app, eid, "case_studies", now + timedelta(days=40))
    readiness = (await staff.get(f"/api/v1/enterprises/{eid}/readiness")).json()
    assert "case_studies" not in readiness["missing"]
    warning = timedelta(days=30)
    assert (await run_expiry(app.state.database, warning=warning, now=now + timedelta(days=20))).warned == 1
    changes = [e["data"] for e in await outbox_events(app) if e["type"] == "enterprises.readiness.changed.v1"]
    assert changes[-1]["expiring_soon"] == ["case_studies"]
    assert (await run_expiry(app.state.database, warning=warning, now=now + timedelta(days=41))).expired == 1
    changes = [e["data"] for e in await outbox_events(app) if e["type"] == "enterprises.readiness.changed.v1"]
    assert "case_studies" in changes[-1]["missing"]
    assert changes[-1]["version"] == changes[-2]["version"] + 1
    milestone = (await staff.get(f"/api/v1/enterprises/{eid}/milestones/case_studies")).json()
    assert milestone["status"] == "expired"
    history = (
        await staff.get(f"/api/v1/enterprises/{eid}/history", params={"milestone_code": "case_studies"})
    ).json()
    assert [h["action"] for h in history["items"]][-2:] == ["milestone_expiring", "milestone_expired"]
    assert history["items"][-1]["actor"]["role"] == "system"


async def test_a_verified_milestone_past_its_expiry_is_missing_before_the_job_runs(
    app: FastAPI, staff: httpx.AsyncClient
) -> None:
    enterprise = await create_enterprise(staff)
    eid = enterprise["id"]
    await verified_until(app, eid, "case_studies", datetime.now(UTC) + timedelta(seconds=1.5))
    assert "case_studies" not in (await staff.get(f"/api/v1/enterprises/{eid}/readiness")).json()["missing"]

    async def lapsed() -> bool:
        readiness = (await staff.get(f"/api/v1/enterprises/{eid}/readiness")).json()
        return "case_studies" in readiness["missing"]

    await wait_until(lapsed, timeout=5)
    gaps = (await staff.get(f"/api/v1/enterprises/{eid}/readiness")).json()["gaps"]
    assert next(g for g in gaps if g["code"] == "case_studies")["reason"] == "expired"


async def test_the_warning_window_is_configurable(app: FastAPI, staff: httpx.AsyncClient) -> None:
    now = datetime.now(UTC)
    enterprise = await create_enterprise(staff)
    await verified_until(app, enterprise["id"], "case_studies", now + timedelta(days=10))
    assert (await run_expiry(app.state.database, warning=timedelta(days=5), now=now)).warned == 0
    assert (
        await run_expiry(app.state.database, warning=timedelta(days=5), now=now + timedelta(days=6))
    ).warned == 1


def test_the_warning_window_defaults_to_30_days_and_reads_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert EnterprisesSettings().expiry_warning == timedelta(days=30)
    monkeypatch.setenv("ENTERPRISES_EXPIRY_WARNING_DAYS", "14")
    assert EnterprisesSettings().expiry_warning == timedelta(days=14)


async def test_a_renewed_milestone_is_warned_about_again(app: FastAPI, staff: httpx.AsyncClient) -> None:
    now = datetime.now(UTC)
    enterprise = await create_enterprise(staff)
    eid = enterprise["id"]
    await verified_until(app, eid, "case_studies", now + timedelta(days=10))
    warning = timedelta(days=30)
    assert (await run_expiry(app.state.database, warning=warning, now=now)).warned == 1
    await verified_until(app, eid, "case_studies", now + timedelta(days=20))
    assert (await run_expiry(app.state.database, warning=warning, now=now)).warned == 1
    expiring = [e for e in await outbox_events(app) if e["type"] == "enterprises.milestone.expiring.v1"]
    assert len(expiring) == 2


async def test_the_running_service_expires_milestones_by_itself(settings: EnterprisesSettings) -> None:
    settings = settings.model_copy(update={"run_jobs": True, "expiry_job_interval_seconds": 0.2})
    app = create_app(settings)
    async with running(app), client(app) as staff:
        enterprise = await create_enterprise(staff)
        # Seconds ahead: time for the submit and the verify on a loaded machine (a lapsed expiry is refused).
        await verified_until(app, enterprise["id"], "case_studies", datetime.now(UTC) + timedelta(seconds=5))

        async def expired() -> bool:
            return any(e["type"] == "enterprises.milestone.expired.v1" for e in await outbox_events(app))

        await wait_until(expired, timeout=20)
        expiring = [e for e in await outbox_events(app) if e["type"] == "enterprises.milestone.expiring.v1"]
        assert len(expiring) <= 1


async def test_evidence_resubmitted_after_expiry_starts_without_the_lapsed_expiry(
    app: FastAPI, staff: httpx.AsyncClient
) -> None:
    now = datetime.now(UTC)
    enterprise = await create_enterprise(staff)
    eid = enterprise["id"]
    await verified_until(app, eid, "case_studies", now + timedelta(days=3))
    await run_expiry(app.state.database, warning=timedelta(days=30), now=now + timedelta(days=4))
    url = f"/api/v1/enterprises/{eid}/milestones/case_studies"
    assert (await staff.get(url)).json()["status"] == "expired"
    async with client(app, enterprise_principal(eid)) as own:
        resubmitted = await own.patch(url, json={"status": "submitted", "evidence": {"reference": "CS-2"}})
    assert resubmitted.status_code == 200, resubmitted.text
    assert resubmitted.json()["expires_at"] is None
    verified = await staff.patch(
        url, json={"status": "verified", "expires_at": (now + timedelta(days=90)).isoformat()}
    )
    assert verified.status_code == 200
    assert verified.json()["status"] == "verified"
