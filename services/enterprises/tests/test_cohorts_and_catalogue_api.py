"""Cohorts and the milestone catalogue through the API, and readiness after a catalogue change."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import sqlalchemy as sa
from fastapi import FastAPI

from services.enterprises.app import create_app
from services.enterprises.events import MilestoneDefinitionPublished
from services.enterprises.jobs import run_readiness_refresh
from services.enterprises.settings import EnterprisesSettings
from services.enterprises.tests.conftest import (
    ANCHOR,
    CATALOGUE_EVENT,
    INTEGRATOR,
    MENTOR,
    create_enterprise,
    enterprise_principal,
    outbox_count,
    outbox_events,
)
from shared.outbox import outbox_table
from shared.testing.apps import client, running
from shared.testing.polling import wait_until

COHORTS = "/api/v1/cohorts"
DEFINITIONS = "/api/v1/milestone-definitions"
COHORT = {
    "name": "Leeds 2027 spring",
    "programme": "Tender ready",
    "start_date": "2027-03-01",
    "end_date": "2027-08-31",
}
DEFINITION = {
    "code": "food_hygiene_rating",
    "name": "Food hygiene rating 5",
    "category": "accreditation",
    "description": "Food Standards Agency hygiene rating of 5 for catering contracts.",
    "applies_when": {"all": [{"cpv_division_in": ["55", "15"]}, {"employees_gte": 2}]},
    "validity_days": 730,
}


async def test_staff_open_a_cohort_and_enterprises_join_it(staff: httpx.AsyncClient) -> None:
    response = await staff.post(COHORTS, json=COHORT, headers={"Idempotency-Key": "cohort-1"})
    assert response.status_code == 201, response.text
    cohort = response.json()
    assert response.headers["location"] == f"{COHORTS}/{cohort['id']}"
    replay = await staff.post(COHORTS, json=COHORT, headers={"Idempotency-Key": "cohort-1"})
    assert replay.json()["id"] == cohort["id"]
    enterprise = await create_enterprise(staff)
    joined = await staff.patch(f"/api/v1/enterprises/{enterprise['id']}", json={"cohort_id": cohort["id"]})
    assert joined.json()["cohort_id"] == cohort["id"]
    fetched = (await staff.get(f"{COHORTS}/{cohort['id']}")).json()
    assert fetched["enterprises_count"] == 1
    listed = (await staff.get(COHORTS)).json()
    assert [c["id"] for c in listed["items"]] == [cohort["id"]]


async def test_a_cohort_name_is_unique_and_its_dates_in_order(staff: httpx.AsyncClient) -> None:
    assert (await staff.post(COHORTS, json=COHORT)).status_code == 201
    duplicate = await staff.post(COHORTS, json=COHORT)
    assert duplicate.status_code == 409
    backwards = await staff.post(COHORTS, json=COHORT | {"name": "Other", "end_date": "2027-01-01"})
    assert backwards.status_code == 422
    assert backwards.json()["errors"][0]["field"] == "end_date"
    bad_date = await staff.post(COHORTS, json=COHORT | {"name": "Other", "start_date": "2027-02-30"})
    assert bad_date.json()["errors"][0]["field"] == "start_date"


async def test_cohorts_page_in_creation_order(staff: httpx.AsyncClient) -> None:
    ids = [(await staff.post(COHORTS, json=COHORT | {"name": f"Cohort {n}"})).json()["id"] for n in range(5)]
    first = (await staff.get(COHORTS, params={"limit": 2})).json()
    second = (await staff.get(COHORTS, params={"limit": 2, "cursor": first["next_cursor"]})).json()
    third = (await staff.get(COHORTS, params={"limit": 2, "cursor": second["next_cursor"]})).json()
    assert [c["id"] for c in first["items"] + second["items"] + third["items"]] == ids
    assert third["next_cursor"] is None


async def test_only_staff_manage_cohorts(app: FastAPI) -> None:
    for principal in (ANCHOR, MENTOR, INTEGRATOR, enterprise_principal(str(uuid.uuid4()))):
        async with client(app, principal) as http:
            assert (await http.post(COHORTS, json=COHORT)).status_code == 403
            assert (await http.get(COHORTS)).status_code == 403


async def test_anyone_signed_in_reads_the_default_catalogue(app: FastAPI) -> None:
    for principal in (ANCHOR, MENTOR, INTEGRATOR, enterprise_principal(str(uuid.uuid4()))):
        async with client(app, principal) as http:
            response = await http.get(DEFINITIONS)
            assert response.status_code == 200
    items = response.json()["items"]
    assert len(items) == 17
    assert items[0]["code"] == "legal_entity"
    by_code = {d["code"]: d for d in items}
    assert by_code["health_safety_policy"]["applies_when"] == {"employees_gte": 5}
    assert by_code["modern_slavery_statement"]["applies_when"] == {"turnover_pence_gte": 3_600_000_000}
    assert by_code["employers_liability_insurance"]["threshold_pence"] == 500_000_000
    assert all(d["builtin"] for d in items)


async def test_staff_add_a_definition_with_a_rule(app: FastAPI, staff: httpx.AsyncClient) -> None:
    response = await staff.post(DEFINITIONS, json=DEFINITION)
    assert response.status_code == 201, response.text
    assert response.json()["builtin"] is False
    page = (await staff.get(DEFINITIONS, params={"limit": 10})).json()
    rest = (await staff.get(DEFINITIONS, params={"limit": 10, "cursor": page["next_cursor"]})).json()
    assert [d["code"] for d in page["items"] + rest["items"]][-1] == "food_hygiene_rating"
    assert (await staff.post(DEFINITIONS, json=DEFINITION)).status_code == 409
    async with client(app, MENTOR) as mentor:
        assert (await mentor.post(DEFINITIONS, json=DEFINITION | {"code": "other_code"})).status_code == 403


async def test_a_definition_with_a_bad_rule_or_code_is_refused_naming_the_field(
    app: FastAPI, staff: httpx.AsyncClient
) -> None:
    bad_rule = await staff.post(DEFINITIONS, json=DEFINITION | {"applies_when": {"employees_gte": "five"}})
    assert bad_rule.status_code == 422
    assert bad_rule.json()["errors"][0]["field"] == "applies_when.employees_gte"
    nested = await staff.post(
        DEFINITIONS, json=DEFINITION | {"applies_when": {"any": [{"always": True}, {"colour": "red"}]}}
    )
    assert nested.json()["errors"][0]["field"] == "applies_when.any.1.colour"
    bad_code = await staff.post(DEFINITIONS, json=DEFINITION | {"code": "Food Hygiene"})
    assert bad_code.json()["errors"][0]["field"] == "code"
    bad_category = await staff.post(DEFINITIONS, json=DEFINITION | {"category": "vibes"})
    assert bad_category.json()["errors"][0]["field"] == "category"
    assert len((await staff.get(DEFINITIONS, params={"limit": 100})).json()["items"]) == 17


async def test_a_catalogue_change_announces_readiness_only_where_it_changed(
    app: FastAPI, staff: httpx.AsyncClient
) -> None:
    caterer = await create_enterprise(staff, cpv_codes=["55520000-1"], employees=4)
    tiny_caterer = await create_enterprise(staff, cpv_codes=["55520000-1"], employees=1)
    cleaner = await create_enterprise(staff, cpv_codes=["90910000-9"], employees=4)
    before = await outbox_count(app)
    assert (await staff.post(DEFINITIONS, json=DEFINITION)).status_code == 201
    assert await outbox_count(app) == before  # recomputed by the readiness job, not in the request
    warning = app.state.settings.expiry_warning
    recomputed, announced = await run_readiness_refresh(app.state.database, warning=warning, batch=2)
    assert (recomputed, announced) == (3, 1)
    changes = [
        e for e in (await outbox_events(app))[before:] if e["type"] == "enterprises.readiness.changed.v1"
    ]
    assert [c["subject"] for c in changes] == [caterer["id"]]
    assert "food_hygiene_rating" in changes[0]["data"]["missing"]
    assert changes[0]["data"]["version"] == 2
    assert await run_readiness_refresh(app.state.database, warning=warning) == (0, 0)
    for other in (tiny_caterer, cleaner):
        readiness = (await staff.get(f"/api/v1/enterprises/{other['id']}/readiness")).json()
        assert "food_hygiene_rating" not in readiness["required"]


async def test_a_definition_outside_overall_readiness_recomputes_nothing(
    app: FastAPI, staff: httpx.AsyncClient
) -> None:
    await create_enterprise(staff)
    assert (await staff.post(DEFINITIONS, json=DEFINITION | {"core": False})).status_code == 201
    assert await run_readiness_refresh(app.state.database, warning=app.state.settings.expiry_warning) == (
        0,
        0,
    )


async def test_the_running_service_recomputes_readiness_after_a_catalogue_change(
    settings: EnterprisesSettings,
) -> None:
    settings = settings.model_copy(update={"run_jobs": True, "readiness_job_interval_seconds": 0.1})
    app = create_app(settings)
    async with running(app), client(app) as staff:
        enterprise = await create_enterprise(staff, cpv_codes=["55520000-1"], employees=4)
        assert (await staff.post(DEFINITIONS, json=DEFINITION)).status_code == 201

        async def announced() -> bool:
            events = await outbox_events(app)
            return any(
                e["type"] == "enterprises.readiness.changed.v1"
                and e["subject"] == enterprise["id"]
                and "food_hygiene_rating" in e["data"]["missing"]
                for e in events
            )

        await wait_until(announced, timeout=10)


async def test_raising_a_threshold_makes_lower_cover_missing_and_announces_it(
    app: FastAPI, staff: httpx.AsyncClient
) -> None:
    enterprise = await create_enterprise(staff, works_with_public=True)
    eid = enterprise["id"]
    milestone = f"/api/v1/enterprises/{eid}/milestones/public_liability_insurance"
    async with client(app, enterprise_principal(eid)) as own:
        submitted = await own.patch(
            milestone,
            json={"status": "submitted", "evidence": {"reference": "PL-1"}, "value_pence": 200_000_000},
        )
        assert submitted.status_code == 200
    assert (await staff.patch(milestone, json={"status": "verified"})).status_code == 200
    url = f"{DEFINITIONS}/public_liability_insurance"
    current = await staff.get(url)
    assert current.headers["etag"] == '"1"'
    changed = await staff.patch(url, json={"threshold_pence": 500_000_000}, headers={"If-Match": '"1"'})
    assert changed.status_code == 200, changed.text
    assert changed.headers["etag"] == '"2"'
    assert changed.json()["threshold_pence"] == 500_000_000
    stale = await staff.patch(url, json={"threshold_pence": 1}, headers={"If-Match": '"1"'})
    assert stale.status_code == 412
    warning = app.state.settings.expiry_warning
    assert await run_readiness_refresh(app.state.database, warning=warning) == (1, 1)
    latest = [e for e in await outbox_events(app) if e["type"] == "enterprises.readiness.changed.v1"][-1]
    assert "public_liability_insurance" in latest["data"]["missing"]
    gaps = (await staff.get(f"/api/v1/enterprises/{eid}/readiness")).json()["gaps"]
    assert {
        "code": "public_liability_insurance",
        "reason": "below_threshold",
        "required_value_pence": 500_000_000,
        "value_pence": 200_000_000,
    } in gaps


async def test_changing_a_definition_is_checked_and_staff_only(
    app: FastAPI, staff: httpx.AsyncClient
) -> None:
    url = f"{DEFINITIONS}/health_safety_policy"
    bad = await staff.patch(url, json={"applies_when": {"employees_gte": -5}})
    assert bad.status_code == 422
    assert bad.json()["errors"][0]["field"] == "applies_when.employees_gte"
    assert (await staff.patch(url, json={"name": None})).status_code == 422
    assert (await staff.patch(f"{DEFINITIONS}/no_such_code", json={"name": "x"})).status_code == 404
    same = await staff.patch(url, json={"applies_when": {"employees_gte": 5}})
    assert same.json()["version"] == 1
    for principal in (MENTOR, INTEGRATOR, enterprise_principal(str(uuid.uuid4()))):
        async with client(app, principal) as http:
            assert (await http.patch(url, json={"name": "Mine"})).status_code == 403
    assert await run_readiness_refresh(app.state.database, warning=app.state.settings.expiry_warning) == (
        0,
        0,
    )


async def test_the_catalogue_is_announced_once_and_each_added_or_changed_definition_after(
    app: FastAPI, staff: httpx.AsyncClient
) -> None:
    def announcements(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [e for e in events if e["type"] == CATALOGUE_EVENT]

    seeded = announcements(await outbox_events(app, catalogue=True))
    listed = (await staff.get(DEFINITIONS, params={"limit": 100})).json()["items"]
    assert [e["subject"] for e in seeded] == [d["code"] for d in listed]  # the built-in catalogue
    for event in seeded:
        assert set(event["data"]) == set(MilestoneDefinitionPublished.model_fields)  # the migration's copy
        payload = MilestoneDefinitionPublished.model_validate(event["data"])
        assert payload.builtin and payload.version == 1 and payload.code == event["subject"]

    async def all_published() -> bool:  # the relay sends them when the service starts
        async with app.state.database.transaction(write=False) as session:
            unsent = await session.scalar(
                sa.select(sa.func.count()).where(
                    outbox_table.c.subject == CATALOGUE_EVENT, outbox_table.c.sent_at.is_(None)
                )
            )
        return unsent == 0

    await wait_until(all_published, timeout=20)

    assert (await staff.post(DEFINITIONS, json=DEFINITION | {"code": "Bad Code"})).status_code == 422
    assert (await staff.post(DEFINITIONS, json=DEFINITION)).status_code == 201
    url = f"{DEFINITIONS}/{DEFINITION['code']}"
    changed = await staff.patch(url, json={"name": "Food hygiene rating 4 or 5"}, headers={"If-Match": '"1"'})
    assert changed.status_code == 200, changed.text
    unchanged = await staff.patch(
        url, json={"name": "Food hygiene rating 4 or 5"}, headers={"If-Match": '"2"'}
    )
    assert unchanged.status_code == 200
    later = announcements(await outbox_events(app, catalogue=True))[len(seeded) :]
    assert [(e["subject"], e["data"]["version"], e["data"]["name"]) for e in later] == [
        ("food_hygiene_rating", 1, "Food hygiene rating 5"),
        ("food_hygiene_rating", 2, "Food hygiene rating 4 or 5"),
    ]
    assert later[0]["data"]["builtin"] is False
    assert later[0]["data"]["applies_when"] == DEFINITION["applies_when"]
